"""Where static evidence ends for a script: the data files its own package ships that nothing
kept. A packaged script reads its package's data by names its text builds at run time (cowsay's
`$cowpath/$f.cow`); when no literal, recipe, rule, `--add`, `--keep` or probe brought them, one
warning per script names the script, one of the files, how many there are, and the flags that
keep them.

A data file here is a file of a package that owns the script (dpkg; not glibc's, whose data the
runtime rules decide on): not documentation and the like (evidence.filtered), not under a
directory that is never one program's (evidence.NEVER) nor what a package ships for the system
(SERVICE), not a program (executable) and not an ELF file (the loader and the commands' evidence
decide on those), present in the root. Without a package database nothing is said. The
directory the fix names is where all the files are, unless that is a system or module
directory (/usr/share, dist-packages): then the one holding most of them, or the file itself.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable

from slimmer.assemble.evidence import GENERIC, GLIBC_PACKAGES, NEVER, filtered
from slimmer.errors import SlimmerError
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.root import Resolved, Root
from slimmer.loader.script_literals import module_dir
from slimmer.notices import Notice

CODE = "script-data-left-out"
METADATA = (".egg-info", ".dist-info")
# What a package ships for the system rather than for its programs to read (evidence.filtered
# leaves out the rest of this kind).
SERVICE = ("/usr/lib/tmpfiles.d/", "/usr/lib/sysusers.d/", "/usr/lib/binfmt.d/", "/etc/apt/",
           "/lib/udev/", "/usr/lib/udev/", "/etc/udev/", "/etc/profile.d/", "/etc/sudoers.d/",
           "/etc/X11/", "/etc/pam.d/", "/usr/share/polkit-1/", "/etc/sysctl.d/",
           "/usr/lib/sysctl.d/", "/etc/modprobe.d/", "/usr/lib/mime/", "/usr/share/debhelper/",
           "/etc/emacs/", "/usr/share/emacs/")


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
        for package in (p for p in owners if p not in GLIBC_PACKAGES):  # the rules' data
            missing = _missing(root, db.files(package), found.real, kept)
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
    if directory in GENERIC or module_dir(directory):
        counts = Counter(os.path.dirname(p) for p in missing)  # in the order of `missing`
        # (a python package's metadata beside it gives way to its modules)
        directory = max(counts, key=lambda d: (counts[d], not d.endswith(METADATA)))
    example = next(p for p in missing if p == directory or p.startswith(directory + "/"))
    if directory in GENERIC or module_dir(directory):  # /etc: the file, not the directory
        directory = example
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
