"""--check-reproducible: build a second time, in a child process with another output
directory, umask 077 and TZ=Pacific/Kiritimati, and compare the bytes.

A child process rather than this one with its umask and TZ changed: those are process-wide, so
changing them would leak into whatever else runs here (a library caller, other threads), and a
fresh interpreter also draws another hash seed, so an order that follows a set's shows up too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from slimmer.errors import SlimmerError
from slimmer.image.diff import diff

OTHER_UMASK = 0o077
OTHER_TZ = "Pacific/Kiritimati"
SAME_BYTES_NOTE = "(same files and config: the archive bytes differ)"

# build(output, elsewhere): write the image to `output`; elsewhere = with OTHER_UMASK, OTHER_TZ
Build = Callable[[str, bool], object]


@dataclass(frozen=True, slots=True)
class Compared:
    first: str  # the first build's archive (a copy when it went to a device or FIFO)
    differences: tuple[str, ...]  # diff lines; empty when the bytes are the same


def compare_with_second_build(output: str, build: Build) -> Compared:
    """Build again into a temporary directory and compare with `output`. An output that is
    not a regular file (a device, a FIFO) cannot be read back: it is built again there first,
    as it was."""
    with tempfile.TemporaryDirectory(prefix="slimmer-again-") as other:
        again = os.path.join(other, "again.tar")
        if not os.path.isfile(output):
            output = os.path.join(other, "first.tar")
            build(output, False)
        build(again, True)
        with open(output, "rb") as a, open(again, "rb") as b:
            if a.read() == b.read():
                return Compared(output, ())
        lines = tuple(d.line for d in diff(output, again)) or (SAME_BYTES_NOTE,)
        return Compared(output, lines)


def run_again(python: str, words: Sequence[str], cwd: str, environ: Mapping[str, str],
              elsewhere: bool) -> None:
    """Run `python -m slimmer WORDS` in `cwd` with `environ` (plus, elsewhere, TZ and the
    umask in the child's own environment); its SlimmerError is raised here, word for word."""
    env = dict(environ)
    if elsewhere:
        env["TZ"] = OTHER_TZ
    done = subprocess.run([python, "-m", "slimmer", *words], cwd=cwd, env=env,
                          umask=OTHER_UMASK if elsewhere else -1, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        raise _failure(done.returncode, done.stderr)


def _failure(code: int, stderr: str) -> SlimmerError:
    lines = stderr.splitlines()
    at = next((i for i in reversed(range(len(lines))) if lines[i].startswith("error: ")), None)
    if at is None:
        last = lines[-1] if lines else "no message"
        return SlimmerError(f"the second build failed with exit status {code}: {last}")
    after = lines[at + 1:]  # the error's details, then its hints (cli.fail prints them so)
    return SlimmerError(lines[at][7:],
                        details=[line[2:] for line in after if line.startswith("  ")],
                        hints=[line[6:] for line in after if line.startswith("hint: ")])
