"""What the commands that write an archive share: where the summary goes, the progress line,
and --check-reproducible (the command line written again for a child process)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

from slimmer.errors import SlimmerError

# Importing slimmer.image.layer's alias would load tarfile and zstandard.
Progress = Callable[[int, int], None]

# Not passed to the second build: it writes elsewhere, checks nothing, pushes nowhere.
_NOT_AGAIN = frozenset({"output", "check_reproducible", "push", "insecure", "timeout",
                        "send_credentials_to_realm", "sign_key", "sign_password_env",
                        "attach_sbom", "debug", "verbose", "report", "help"})


def summary_stream(output: str) -> TextIO:
    """stdout, or stderr when the archive itself went to stdout (-o /dev/stdout)."""
    try:
        there, out = os.stat(output), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return sys.stdout
    same = (there.st_dev, there.st_ino) == (out.st_dev, out.st_ino)
    return sys.stderr if same else sys.stdout


def progress() -> Progress | None:
    """A one-line progress display on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != last[0]:
            last[0] = percent
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\rpacking {done / 1e6:.1f}/{total / 1e6:.1f} MB ({percent}%)"
                             + end)
            sys.stderr.flush()

    return show


def command_line_again(args: argparse.Namespace, output: str) -> list[str]:
    """The command line of `args` writing to `output` instead, without --check-reproducible
    and --push. Written from the parsed options rather than edited from argv, where -o can
    hide as -oFILE, --out=FILE or after `--`."""
    own: argparse.ArgumentParser = args.command_parser
    words = [args.command]
    positionals: list[str] = []
    for action in own._actions:
        if action.dest in _NOT_AGAIN or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if not action.option_strings:
            positionals += value if isinstance(value, list) else [value]
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if action.nargs == 0:  # store_true
            words += [flag] if value else []
        elif isinstance(value, list):  # append
            words += [f"{flag}={v}" for v in value]
        elif value is not None and value != action.default:
            words.append(f"{flag}={value}")
    return [*words, f"--output={output}", "--", *positionals]


def check_reproducible(output: str, build: Callable[[str, bool], object],
                       out: TextIO | None = None) -> None:
    """Build again (`build(path, elsewhere)`), and fail with the differences if the bytes are
    not the same. The verdict goes to `out` (stdout; stderr when a JSON report owns stdout)."""
    from slimmer.assemble.reproduce import compare_with_second_build

    found = compare_with_second_build(output, build)
    if not found.differences:
        print("reproducible: a second build (other directory, umask 077, TZ "
              "Pacific/Kiritimati) gave the same bytes", file=out or sys.stdout)
        return
    for line in found.differences:
        print(f"  {line}", file=sys.stderr)
    raise SlimmerError(f"{found.first}: not reproducible: {len(found.differences)} "
                       "differences with a second build (listed above)")


def rebuild(args: argparse.Namespace) -> Callable[[str, bool], None]:
    """The second build of --check-reproducible: this command line again, in a child process
    with this process's environment and working directory."""
    from slimmer.assemble.reproduce import run_again

    cwd, environ = os.getcwd(), dict(os.environ)

    def build(output: str, elsewhere: bool) -> None:
        run_again(sys.executable, command_line_again(args, output), cwd, environ, elsewhere)

    return build
