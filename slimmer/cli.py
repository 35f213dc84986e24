"""The command line: parse arguments, call the library, print, set the exit code.

This is the only module that reads the environment or the process state (argv, cwd); every
SlimmerError is caught in `main`, printed as one `error:` line, and turned into exit status 1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer

from slimmer.errors import SlimmerError
from slimmer.report import closure_json, file_list, missing_message, tree
from slimmer.resolve import Closure, Options, Resolver
from slimmer.sysroot import SysRoot

app = typer.Typer(
    name="slimmer",
    help="Build minimal, reproducible container images from a program, without running it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

P = ParamSpec("P")
R = TypeVar("R")


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """The one place a SlimmerError becomes `error: message` on stderr and exit status 1
    (with the traceback first under --debug)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SlimmerError as exc:
            if "--debug" in sys.argv[1:]:
                traceback.print_exc()
            print(f"error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@app.callback()
def _root_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """slimmer finds exactly the files a program needs, statically, and packs them."""


def _split_paths(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out.extend(p for p in value.replace(";", ":").split(":") if p)
    return tuple(out)


def _program_path(root: SysRoot, given: str, cwd: str) -> str:
    """The in-root absolute path of a program argument. On the host root a relative path is
    relative to the working directory; a bare name that is no file there is looked up in PATH."""
    if given.startswith("/"):
        return given
    if root.root == "/":
        here = os.path.normpath(os.path.join(cwd, given))
        if "/" in given or os.path.lexists(here):
            return here
    elif "/" in given:
        return "/" + given
    for d in DEFAULT_PATH.split(":"):
        found = root.lookup(f"{d}/{given}")
        if found is not None and found.is_file:
            return f"{d}/{given}"
    return "/" + given if root.root != "/" else os.path.join(cwd, given)


@app.command()
@_reports_errors
def deps(
    binaries: Annotated[list[str], typer.Argument(metavar="BIN...", help="Programs to resolve.")],
    root: Annotated[str, typer.Option("--root", help="Resolve as if DIR were /.",
                                      metavar="DIR")] = "/",
    library_path: Annotated[list[str] | None, typer.Option(
        "--library-path", metavar="DIR[:DIR]",
        help="The LD_LIBRARY_PATH the program will run with (repeatable).")] = None,
    hwcaps: Annotated[str, typer.Option(
        "--hwcaps", metavar="LIST",
        help="glibc-hwcaps subdirectories the target CPU supports, best first "
             "(e.g. x86-64-v3,x86-64-v2). Default: a baseline CPU.")] = "",
    platform: Annotated[str | None, typer.Option(
        "--platform", help="Value of $PLATFORM (default: the architecture's).")] = None,
    as_list: Annotated[bool, typer.Option(
        "--list", help="Print every file the loader opens, one path per line.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per "
                                          "program.")] = False,
) -> None:
    """Show the libraries each program loads and how the loader finds them (like lddtree)."""
    if as_list and as_json:
        raise SlimmerError("--list and --json cannot be used together")
    sysroot = SysRoot(root)
    options = Options(
        library_path=_split_paths(library_path or []),
        hwcaps=tuple(h for h in hwcaps.split(",") if h),
        platform=platform,
    )
    resolver = Resolver(sysroot, options)
    cwd = os.getcwd()
    closures: list[Closure] = [
        resolver.closure(_program_path(sysroot, b, cwd)) for b in binaries
    ]
    if as_json:
        print(json.dumps([closure_json(c) for c in closures], indent=2))
    elif as_list:
        print("\n".join(file_list(closures)))
    else:
        for closure in closures:
            print("\n".join(tree(closure)))
            for warning in closure.warnings:
                print(f"warning: {warning}", file=sys.stderr)
    problem = missing_message(closures)
    if problem:
        for line in problem.splitlines():
            print(f"error: {line}", file=sys.stderr)
        raise typer.Exit(1)


def run() -> None:
    """Console entry point."""
    app(prog_name="slimmer")
