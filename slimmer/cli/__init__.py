"""The command line: parse arguments, call the library, print, set the exit code.

This package is the only place that reads the environment or the process state (argv, cwd, the
terminal). `main` is the one place that catches SlimmerError, prints it as one `error:` line
(its details and `hint:` lines under it, each cut to 300 characters unless --verbose), and turns
it into exit status 1 (with the traceback under --debug). The commands
live in one module per family: deps.py, build.py (pack, build, slim), images.py (verify, index,
diff, why, inspect), push.py; the options they share in options.py.

argparse rather than typer: typer 0.29 pulls in rich and pydantic and costs about 0.45 s per
start (docs/benchmarks.md), more than resolving ffmpeg's 214 libraries takes.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Sequence

from slimmer.cli import deps
from slimmer.cli.options import debug_option, verbose
from slimmer.errors import SlimmerError


class Terminated(BaseException):
    """SIGTERM, raised where the program was so that cleanup runs (like KeyboardInterrupt)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (only="deps") just what `slimmer deps` needs: building (and
    importing) the other commands costs start-up time that a batch `deps` run can do without."""
    top = argparse.ArgumentParser(
        prog="slimmer",
        description="Build minimal, reproducible container images from a program, "
                    "found statically: the program is never run.")
    debug_option(top, top=True)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    deps.add_parsers(sub)
    if only == "deps":
        return top
    from slimmer.cli import build, images, push

    build.add_parsers(sub)
    images.add_parsers(sub)
    push.add_parsers(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    # A short-lived process that allocates many small objects and frees few: the cyclic
    # collector only costs time here (docs/benchmarks.md).
    gc.set_threshold(200_000, 50, 100)
    words = sys.argv[1:] if argv is None else list(argv)
    args = parser(only=words[0] if words else None).parse_args(words)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code: int = args.run(args)
        return code
    except SlimmerError as exc:
        if args.debug:
            import traceback  # only here: it costs start-up time

            traceback.print_exc()
        fail(exc, verbose(args), getattr(args, "report", "text") == "json")
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail(exc: SlimmerError, verbose: bool, report_json: bool) -> None:
    """The one place a failure is printed: `error: ` line, details, `hint: ` lines on stderr,
    each cut to errors.LIMIT characters unless `verbose` (and the same words as one JSON object
    on stdout under --report json)."""
    from slimmer.errors import fit  # names from images: no fake lines

    if report_json:
        import json

        print(json.dumps({"error": exc.as_json(verbose)}))
    for line in exc.lines(verbose):
        print(fit(line, verbose), file=sys.stderr)


def run() -> None:
    """Console entry point."""
    sys.exit(main())
