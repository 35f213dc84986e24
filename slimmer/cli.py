"""The command line: parse arguments, call the library, print, set the exit code.

This is the only module that reads the environment or the process state (argv, cwd); every
SlimmerError is caught in `main`, printed as one `error:` line, and turned into exit status 1.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Annotated, ParamSpec, TypeVar

import typer

from slimmer.errors import SlimmerError
from slimmer.layer import Progress
from slimmer.pack import PackOptions
from slimmer.pack import pack as run_pack
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


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise SlimmerError(f"{option} {value}: expected KEY=VALUE")
        out[key] = val
    return out


def _command(value: str | None, option: str) -> tuple[str, ...] | None:
    """A JSON array (exec form) or a shell-like string split into words."""
    if value is None:
        return None
    if value.lstrip().startswith("["):
        try:
            words = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SlimmerError(f"{option}: invalid JSON array ({exc.msg})") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise SlimmerError(f"{option}: expected a JSON array of strings")
        return tuple(words)
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise SlimmerError(f"{option} {value!r}: {exc}") from None


def source_date_epoch(environ: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH as the reproducible-builds spec has it: an ASCII integer, or 0."""
    raw = environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit():
        raise SlimmerError(f"SOURCE_DATE_EPOCH={raw!r}: not a non-negative integer")
    value = int(raw)
    if value >= 8**11:  # the largest mtime a plain tar header holds
        raise SlimmerError(f"SOURCE_DATE_EPOCH={raw!r}: too large")
    return value


def _progress() -> Progress | None:
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


Opt = typer.Option


@app.command()
@_reports_errors
def pack(
    binaries: Annotated[list[str], typer.Argument(metavar="BIN...", help="Programs to pack.")],
    output: Annotated[str, Opt("-o", "--output", help="The image archive to write.")],
    tag: Annotated[str | None, Opt(
        "--tag", help="NAME[:TAG] (default: the first program's name, tag latest).")] = None,
    entrypoint: Annotated[str | None, Opt(
        "--entrypoint", help="Entrypoint, as words or a JSON array (default: the first "
        "program at its place in the image).")] = None,
    cmd: Annotated[str | None, Opt("--cmd", help="Cmd, as words or a JSON array.")] = None,
    env: Annotated[list[str] | None, Opt("--env", metavar="K=V",
                                         help="Environment (repeatable; PATH is set).")] = None,
    workdir: Annotated[str, Opt("--workdir", help="Working directory.")] = "",
    user: Annotated[str, Opt("--user", help="root, nonroot (65532) or uid[:gid].")] = "",
    label: Annotated[list[str] | None, Opt("--label", metavar="K=V")] = None,
    annotation: Annotated[list[str] | None, Opt("--annotation", metavar="K=V")] = None,
    expose: Annotated[list[str] | None, Opt("--expose", metavar="PORT[/PROTO]")] = None,
    add: Annotated[list[str] | None, Opt(
        "--add", metavar="SRC:DEST", help="Host file or directory to add (ELF files among "
        "them are resolved too).")] = None,
    root: Annotated[str, Opt("--root", metavar="DIR", help="Take everything from DIR as "
                                                          "if it were /.")] = "/",
    library_path: Annotated[list[str] | None, Opt(
        "--library-path", metavar="DIR[:DIR]",
        help="The LD_LIBRARY_PATH the program will run with.")] = None,
    compress: Annotated[str, Opt(
        "--compress", help="gzip (loads everywhere), zstd (Docker 23+, podman, containerd, "
        "skopeo; not Docker 20.10 or umoci) or none.")] = "gzip",
    keep_setuid: Annotated[bool, Opt("--keep-setuid",
                                     help="Keep setuid/setgid bits (dropped by default).")] = False,
) -> None:
    """Pack programs and exactly the files they load into a one-layer image archive that
    docker load, podman load, skopeo, umoci and ctr accept. Reproducible: set
    SOURCE_DATE_EPOCH for the timestamps (default 0)."""
    if compress not in ("gzip", "zstd", "none"):
        raise SlimmerError(f"--compress {compress}: expected gzip, zstd or none")
    epoch = source_date_epoch(os.environ)
    sysroot = SysRoot(root)
    cwd = os.getcwd()
    adds = []
    for spec in add or []:
        src, sep, dest = spec.rpartition(":")
        if not sep or not src or not dest:
            raise SlimmerError(f"--add {spec}: expected SRC:DEST")
        adds.append((os.path.join(cwd, src), dest))
    options = PackOptions(
        programs=tuple(_program_path(sysroot, b, cwd) for b in binaries),
        output=os.path.join(cwd, output),
        root=root,
        tag=tag,
        entrypoint=_command(entrypoint, "--entrypoint"),
        cmd=_command(cmd, "--cmd"),
        env=tuple(env or ()),
        workdir=workdir,
        user=user,
        labels=_pairs(label, "--label"),
        annotations=_pairs(annotation, "--annotation"),
        expose=tuple(expose or ()),
        add=tuple(adds),
        library_path=_split_paths(library_path or []),
        compression=compress,
        keep_setuid=keep_setuid,
        epoch=epoch,
    )
    result = run_pack(options, _progress())
    image = result.image
    print(f"wrote {output}: {image.reference.short}, {result.files} entries, "
          f"{result.content_bytes / 1e6:.1f} MB of files, "
          f"archive {image.archive_size / 1e6:.1f} MB")
    print(f"image id {image.config_digest}")
    print(f"manifest {image.manifest_digest}")


def run() -> None:
    """Console entry point."""
    app(prog_name="slimmer")
