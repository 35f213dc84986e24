"""What the commands that write an archive share: where the summary goes, the progress line,
the layer cache's directory and the compressing threads, and --check-reproducible (the command
line written again for a child process)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TextIO

from slimmer.errors import SlimmerError
from slimmer.progress import Display, Progress

# Not passed to the second build: it writes elsewhere, checks nothing, pushes nowhere, and
# compresses again rather than taking the layer from the cache (it runs with --no-cache).
_NOT_AGAIN = frozenset({"output", "check_reproducible", "push", "insecure", "timeout",
                        "send_credentials_to_realm", "sign_key", "sign_password_env",
                        "attach_sbom", "debug", "verbose", "report", "help", "no_cache",
                        "cache_dir", "quiet"})


def summary_stream(output: str) -> TextIO:
    """stdout, or stderr when the archive itself went to stdout (-o /dev/stdout)."""
    try:
        there, out = os.stat(output), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return sys.stdout
    same = (there.st_dev, there.st_ino) == (out.st_dev, out.st_ino)
    return sys.stderr if same else sys.stdout


@contextlib.contextmanager
def progress(quiet: bool = False) -> Iterator[Progress | None]:
    """A one-line progress display on a terminal (stderr), for work longer than a second;
    nothing when stderr is not a terminal or with --quiet."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with Display(sys.stderr, time.monotonic) as display:
        yield display


def workers() -> int:
    """Threads to compress with: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cache_dir(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The layer cache's directory: None with --no-cache, --cache-dir, else
    $XDG_CACHE_HOME/slimmer (an absolute XDG_CACHE_HOME only, as the XDG spec says), else
    ~/.cache/slimmer."""
    if args.no_cache:
        return None
    if args.cache_dir:
        given = os.path.join(os.getcwd(), args.cache_dir)
        if os.path.exists(given) and not os.path.isdir(given):
            raise SlimmerError(f"{args.cache_dir}: --cache-dir is not a directory")
        return given
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "slimmer")
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".cache", "slimmer") if os.path.isabs(home) else None


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
        words = command_line_again(args, output)
        if hasattr(args, "no_cache"):  # a command with a layer cache: compress again
            words.insert(1, "--no-cache")
        run_again(sys.executable, words, cwd, environ, elsewhere)

    return build
