"""The command line: parse arguments, call the library, print, set the exit code.

This is the only module that reads the environment or the process state (argv, cwd, the
terminal); every SlimmerError is caught in `main`, printed as one `error:` line, and turned into
exit status 1 (with the traceback under --debug).

argparse rather than typer: typer 0.29 pulls in rich and pydantic and costs about 0.45 s per
start (docs/benchmarks.md), more than resolving ffmpeg's 214 libraries takes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from slimmer.errors import SlimmerError
from slimmer.loader.report import (
    closures_json,
    closures_json_text,
    file_list,
    missing_message,
    tree,
)
from slimmer.loader.resolve import Closure, Options, Resolver
from slimmer.loader.root import SysRoot

# Importing slimmer.image.layer's alias would load tarfile and zstandard for every command.
Progress = Callable[[int, int], None]

if TYPE_CHECKING:
    from typing import TextIO

    from slimmer.assemble.options import BuildOptions, OutputOptions
    from slimmer.assemble.pack import PackResult
    from slimmer.assemble.recipe import Recipe
    from slimmer.assemble.slim import SlimResult
    from slimmer.assemble.spec import ImageSpec
    from slimmer.tree import FileTree

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Terminated(BaseException):
    """SIGTERM, raised where the program was so that cleanup runs (like KeyboardInterrupt)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


class Exit(Exception):
    """Leave with a status after output was printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# ---- helpers shared by the commands -----------------------------------------------------------


def _split_paths(values: Sequence[str], cwd: str | None = None) -> tuple[str, ...]:
    """--library-path values, split. With `cwd` (programs of the host root), a relative
    directory is relative to it, as program paths and -o are; otherwise to the root's `/`."""
    out: list[str] = []
    for value in values:
        out.extend(os.path.normpath(os.path.join(cwd, p)) if cwd is not None else p
                   for p in value.replace(";", ":").split(":") if p)
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


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
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
        import shlex  # here: only pack, build and slim need it

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


# ---- commands ------------------------------------------------------------------------------


def cmd_deps(args: argparse.Namespace) -> int:
    if args.list and args.json:
        raise SlimmerError("--list and --json cannot be used together")
    sysroot = SysRoot(args.root)
    cwd = os.getcwd()
    options = Options(
        library_path=_split_paths(args.library_path, cwd if args.root == "/" else None),
        hwcaps=tuple(h for h in args.hwcaps.split(",") if h),
        platform=args.platform,
    )
    resolver = Resolver(sysroot, options)
    closures: list[Closure] = [resolver.closure(_program_path(sysroot, b, cwd))
                               for b in args.binaries]
    if args.json:
        if sys.stdout.isatty():
            print(json.dumps(closures_json(closures), indent=2))
        else:  # one line for machines, each distinct library encoded once
            print(closures_json_text(closures))
    elif args.list:
        print("\n".join(file_list(closures)))
    else:
        for closure in closures:
            print("\n".join(tree(closure)))
            for warning in closure.warnings:
                print(f"warning: {warning}", file=sys.stderr)
    problem = missing_message(closures)
    if problem:
        sys.stdout.flush()
        for line in problem.splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from slimmer.assemble.recipe import load_recipe

    recipes = tuple(load_recipe(os.path.join(os.getcwd(), r)) for r in args.recipe)
    return _pack(args, args.binaries, recipes)


def _image_or_program(args: argparse.Namespace, target: str) -> FileTree:
    """The file tree of an image archive, or of the image `pack` would make of a program."""
    import tarfile

    from slimmer.assemble.assembly import assemble
    from slimmer.assemble.options import BuildOptions
    from slimmer.assemble.spec import ImageSpec
    from slimmer.image.explain import read_image

    cwd = os.getcwd()
    host = os.path.join(cwd, target)
    if os.path.isdir(host) or (os.path.isfile(host) and tarfile.is_tarfile(host)):
        return read_image(host).tree  # an archive or a layout directory
    sysroot = SysRoot(args.root)
    build = BuildOptions(programs=(_program_path(sysroot, target, cwd),), root=args.root,
                         library_path=_split_paths(args.library_path,
                                                   cwd if args.root == "/" else None))
    return assemble(ImageSpec(), build).tree


def cmd_verify(args: argparse.Namespace) -> int:
    from slimmer.image.verify import verify

    found = verify(os.path.join(os.getcwd(), args.archive))
    for problem in found.problems:
        print(f"problem: {problem}")
    for note in found.notes:
        print(f"note: {note}")
    if found.ok:
        print(f"ok: {args.archive}: {found.checked} blobs and {found.layers} layers checked; "
              "digests, sizes, diff_ids and manifests agree")
        return 0
    sys.stdout.flush()
    count = len(found.problems)
    raise SlimmerError(f"{args.archive}: {count} problem{'s' if count != 1 else ''} (listed "
                       "above)")


def cmd_index(args: argparse.Namespace) -> int:
    from slimmer.image.index import write_index
    from slimmer.image.write import parse_reference

    check_push(args)
    cwd = os.getcwd()
    inputs = [os.path.join(cwd, a) for a in args.archives]
    output = os.path.join(cwd, args.output)
    ref = parse_reference(args.tag)
    epoch = source_date_epoch(os.environ)
    result = write_index(inputs, output, ref, epoch)
    out = _summary_stream(output)
    print(f"wrote {result.path}: {ref.short}, {len(result.images)} platforms, "
          f"archive {result.archive_size / 1e6:.1f} MB", file=out)
    print(f"index {result.index_digest}", file=out)
    for image in result.images:
        print(f"  {image.name}: manifest {image.manifest['digest']} ({image.source})", file=out)
    if args.check_reproducible:
        _check_reproducible(output, lambda out: write_index(inputs, out, ref, epoch))
    push_written(args, output)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from slimmer.image.diff import diff

    cwd = os.getcwd()
    found = diff(os.path.join(cwd, args.a), os.path.join(cwd, args.b))
    for item in found:
        print(item.line)
    if not found:
        print(f"same: {args.a} and {args.b} hold the same files and config")
    return 1 if found else 0


def cmd_why(args: argparse.Namespace) -> int:
    from slimmer.image.explain import format_why, why

    tree = _image_or_program(args, args.target)
    print("\n".join(format_why(why(tree, args.path))))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from slimmer.image.explain import format_inventory, inventory

    doc = inventory(_image_or_program(args, args.target))
    if args.json:
        print(json.dumps(doc, indent=2 if sys.stdout.isatty() else None))
    else:
        print("\n".join(format_inventory(doc)))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from slimmer.assemble.recipe import find_recipe

    given = args.recipe_name
    recipe = find_recipe(os.path.join(os.getcwd(), given) if "/" in given else given)
    if not recipe.programs:
        raise SlimmerError(f"{recipe.source}: recipe {recipe.name} names no programs to build")
    args.tag = args.tag or f"{recipe.name}:latest"
    return _pack(args, list(recipe.programs), (recipe,))


def _pack(args: argparse.Namespace, binaries: list[str], recipes: tuple[Recipe, ...]) -> int:
    # Imported here: tarfile, zstandard and the writer cost start-up time `deps` does not need.
    from slimmer.assemble.pack import pack as run_pack

    check_push(args)
    sysroot = SysRoot(args.root)
    cwd = os.getcwd()
    image, build, output = _pack_options(
        args, tuple(_program_path(sysroot, b, cwd) for b in binaries), recipes)
    result = run_pack(image, build, output, _progress())
    _print_result(result, _summary_stream(output.path))
    if args.check_reproducible:
        from dataclasses import replace

        _check_reproducible(output.path, lambda out: run_pack(image, build,
                                                              replace(output, path=out)))
    push_written(args, output.path)
    return 0


def _check_reproducible(output: str, build: Callable[[str], object]) -> None:
    """Build again in another directory, with another umask and time zone, and fail with the
    differences if the bytes are not the same."""
    import tempfile
    import time

    from slimmer.image.diff import diff

    with tempfile.TemporaryDirectory(prefix="slimmer-again-") as other:
        again = os.path.join(other, "again.tar")
        if not os.path.isfile(output):  # a device or FIFO: what went there cannot be read back
            output = os.path.join(other, "first.tar")
            build(output)
        umask = os.umask(0o077)
        zone = os.environ.get("TZ")
        os.environ["TZ"] = "Pacific/Kiritimati"
        time.tzset()
        try:
            build(again)
        finally:
            os.umask(umask)
            if zone is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = zone
            time.tzset()
        with open(output, "rb") as a, open(again, "rb") as b:
            same = a.read() == b.read()
        if same:
            print("reproducible: a second build (other directory, umask 077, TZ "
                  "Pacific/Kiritimati) gave the same bytes")
            return
        lines = [d.line for d in diff(output, again)] or ["(same files and config: the "
                                                         "archive bytes differ)"]
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        raise SlimmerError(f"{output}: not reproducible: {len(lines)} differences with a "
                           f"second build (listed above)")


def cmd_slim(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from slimmer.assemble.slim import slim

    check_push(args)
    image, build, output = _pack_options(args, (), ())
    build = replace(build, keep=tuple(args.keep))
    source = os.path.join(os.getcwd(), args.input)
    result = slim(source, image, build, output, args.image, _progress())
    if args.check_reproducible:
        _check_reproducible(output.path, lambda out: slim(
            source, image, build, replace(output, path=out), args.image))
    report = result.report()
    if args.report == "json":
        print(json.dumps(report, indent=2 if sys.stdout.isatty() else None))
    else:
        _print_slimmed(args, result, _summary_stream(output.path))
    # A JSON report owns stdout: what was pushed goes to stderr then.
    push_written(args, output.path, sys.stderr if args.report == "json" else sys.stdout)
    return 0


def _print_slimmed(args: argparse.Namespace, result: SlimResult, out: TextIO) -> None:
    report = result.report()
    _print_result(result.packed, out)
    before, after = report["before"], report["after"]
    share = after["bytes"] / before["bytes"] if before["bytes"] else 0.0
    print(f"slimmed {result.reference or args.input} (entry {result.program}): "
          f"{before['files']} files, {before['bytes'] / 1e6:.1f} MB -> {after['files']} files, "
          f"{after['bytes'] / 1e6:.1f} MB ({share:.0%})")


def _docker_config_path(environ: Mapping[str, str]) -> str:
    """Where Docker keeps credentials: $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    directory = environ.get("DOCKER_CONFIG") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def _push(args: argparse.Namespace, archive: str, references: Sequence[str],
          out: TextIO = sys.stdout) -> None:
    """Push `archive` to each reference and print what was sent and the pinned digest."""
    from slimmer.registry.auth import read_docker_config
    from slimmer.registry.client import ClientOptions
    from slimmer.registry.push import PushOptions, push

    config = read_docker_config(_docker_config_path(os.environ))
    options = PushOptions(ClientOptions(insecure=args.insecure, docker_config=config,
                                        timeout=args.timeout,
                                        realm_credentials=args.send_credentials_to_realm),
                          image=getattr(args, "push_image", None),
                          mount_from=tuple(getattr(args, "mount_from", ())))
    for result in push(archive, references, options):
        blobs = result.uploaded + result.existing + result.mounted
        retried = f", {result.retries} retried" if result.retries else ""
        print(f"pushed {result.destination}: {blobs} blobs ({result.uploaded} uploaded, "
              f"{result.existing} already there, {result.mounted} mounted), "
              f"{result.bytes_uploaded / 1e6:.1f} MB sent, {result.manifests} manifests"
              f"{retried}", file=out)
        print(result.pinned, file=out)


def check_push(args: argparse.Namespace) -> None:
    """Refuse a bad --push reference (or --insecure for it) before building anything."""
    for flag, given in (("--insecure", args.insecure), ("--timeout", args.timeout is not None),
                        ("--send-credentials-to-realm", args.send_credentials_to_realm)):
        if given and not args.push:
            raise SlimmerError(f"{flag} is about --push: give --push REGISTRY/REPO:TAG")
    if args.push:
        from slimmer.outputs import target
        from slimmer.registry.client import checked_destination

        for reference in args.push:
            checked_destination(reference, args.insecure)
        if target(os.path.join(os.getcwd(), args.output)).stream:
            raise SlimmerError(f"{args.output}: --push reads the archive back: write it to a "
                               "file, not a device or FIFO")


def cmd_push(args: argparse.Namespace) -> int:
    _push(args, os.path.join(os.getcwd(), args.archive), args.references)
    return 0


def _summary_stream(output: str) -> TextIO:
    """stdout, or stderr when the archive itself went to stdout (-o /dev/stdout)."""
    try:
        there, out = os.stat(output), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return sys.stdout
    same = (there.st_dev, there.st_ino) == (out.st_dev, out.st_ino)
    return sys.stderr if same else sys.stdout


def _print_result(result: PackResult, out: TextIO = sys.stdout) -> None:
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    image = result.image
    print(f"wrote {image.path}: {image.reference.short}, {result.files} entries, "
          f"{result.content_bytes / 1e6:.1f} MB of files, "
          f"archive {image.archive_size / 1e6:.1f} MB", file=out)
    print(f"image id {image.config_digest}", file=out)
    print(f"manifest {image.manifest_digest}", file=out)


def _pack_options(args: argparse.Namespace, programs: tuple[str, ...],
                  recipes: tuple[Recipe, ...]
                  ) -> tuple[ImageSpec, BuildOptions, OutputOptions]:
    from slimmer.assemble.options import BuildOptions, OutputOptions
    from slimmer.assemble.placing import parse_add
    from slimmer.assemble.runtime import check_features
    from slimmer.assemble.spec import ImageSpec
    from slimmer.image.model import RunConfig

    epoch = source_date_epoch(os.environ)
    cwd = os.getcwd()
    adds = [parse_add(spec, cwd) for spec in args.add]  # SRC:DEST[:UID:GID[:MODE]]
    image = ImageSpec(RunConfig(
        entrypoint=_command(args.entrypoint, "--entrypoint"),
        cmd=_command(args.cmd, "--cmd"),
        env=tuple(args.env),
        working_dir=args.workdir,
        user=args.user,
        labels=_pairs(args.label, "--label"),
        exposed_ports=tuple(args.expose),
    ), annotations=_pairs(args.annotation, "--annotation"))
    output = OutputOptions(os.path.join(cwd, args.output), args.tag)
    return image, BuildOptions(
        programs=programs,
        root=args.root,
        add=tuple(adds),
        # slim (no programs given) resolves inside the image: its paths are the image's
        library_path=_split_paths(args.library_path,
                                  cwd if args.root == "/" and programs else None),
        hwcaps=tuple(h for h in args.hwcaps.split(",") if h),
        platform=args.platform,
        compression=args.compress,
        keep_setuid=args.keep_setuid,
        epoch=epoch,
        with_features=check_features(args.with_features, "--with"),
        without_features=check_features(args.without_features, "--without"),
        recipes=recipes,
        builtin_recipes=not args.no_recipes,
        gconv_charsets=tuple(c for v in args.gconv_charsets for c in v.split(",") if c),
        sbom=os.path.join(cwd, args.sbom) if args.sbom else None,
        lock=os.path.join(cwd, args.lock) if args.lock else None,
        locked=os.path.join(cwd, args.locked) if args.locked else None,
    ), output


# ---- the parser ----------------------------------------------------------------------------


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="resolve (and take files) as if DIR were / (default: /)")
    p.add_argument("--library-path", action="append", default=[], metavar="DIR[:DIR]",
                   help="the LD_LIBRARY_PATH the program will run with (repeatable)")


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (only="deps") just what `slimmer deps` needs: building the
    other commands' options costs start-up time that a batch `deps` run can do without."""
    top = argparse.ArgumentParser(
        prog="slimmer",
        description="Build minimal, reproducible container images from a program, "
                    "found statically: the program is never run.")
    top.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    deps = sub.add_parser("deps", help="show the files the loader opens for programs",
                          description="Show the libraries each program loads and how the "
                                      "loader finds them, like lddtree but exact.")
    deps.add_argument("binaries", nargs="+", metavar="BIN")
    _common_options(deps)
    _cpu_options(deps)
    deps.add_argument("--list", action="store_true",
                      help="print every file the loader opens, one path per line")
    deps.add_argument("--json", action="store_true",
                      help="print a JSON array with one object per program")
    deps.set_defaults(run=cmd_deps)
    if only == "deps":
        return top

    pk = sub.add_parser(
        "pack", help="pack programs into a one-layer image archive",
        description="Pack programs and exactly the files they load into one image archive "
                    "that docker load, podman load, skopeo, umoci and ctr accept. The same "
                    "inputs give the same bytes; SOURCE_DATE_EPOCH sets the timestamps "
                    "(default 0).")
    pk.add_argument("binaries", nargs="+", metavar="BIN")
    pk.add_argument("--recipe", action="append", default=[], metavar="FILE",
                    help="apply this recipe too (repeatable)")
    _image_options(pk)
    pk.set_defaults(run=cmd_pack)

    bd = sub.add_parser(
        "build", help="build an image from a recipe",
        description="Build an image from a built-in recipe (by name) or a recipe file: its "
                    "programs, files and defaults; the options override it.")
    bd.add_argument("recipe_name", metavar="NAME|FILE")
    _image_options(bd)
    bd.set_defaults(run=cmd_build)

    sl = sub.add_parser(
        "slim", help="turn a fat image into a slim one that still runs",
        description="Read a docker-archive tar, an OCI archive tar or an OCI layout directory "
                    "(layers gzip, zstd or plain), find the entry program from its Entrypoint "
                    "and Cmd, and write the image with just what that program needs. Nothing "
                    "runs and no daemon is needed. The output keeps the input's Env, "
                    "WorkingDir, User, Entrypoint, Cmd, ExposedPorts, Labels and StopSignal.")
    sl.add_argument("input", metavar="IN")
    sl.add_argument("--image", metavar="REF", help="which image of an archive holding several")
    sl.add_argument("--keep", action="append", default=[], metavar="PATH_OR_GLOB",
                    help="also keep this path of the image (repeatable)")
    sl.add_argument("--report", choices=("text", "json"), default="text",
                    help="json: a report for machines instead of the summary")
    _image_options(sl)
    sl.set_defaults(run=cmd_slim)

    vf = sub.add_parser(
        "verify", help="check an image archive's digests, sizes and manifests, offline",
        description="Check every blob's digest and size, the layers' diff_ids, and that "
                    "config, manifest, index.json and manifest.json agree. Exit 1 with each "
                    "problem named. Works on archives made by other tools too.")
    vf.add_argument("archive", metavar="IMAGE.tar")
    _common_options(vf)
    vf.set_defaults(run=cmd_verify)

    ix = sub.add_parser(
        "index", help="combine single-platform image archives into one multi-platform archive",
        description="Combine image archives of different platforms (each holding one image) "
                    "into one OCI archive whose index lists them by platform: engines pick "
                    "theirs (podman --platform, ctr import --platform, Docker's containerd "
                    "store). Blobs are checked against their digests on the way. Docker's "
                    "classic store gets NAME:TAG-ARCH[-VARIANT] per platform and NAME:TAG for "
                    "the first. The same inputs give the same bytes.")
    ix.add_argument("archives", nargs="+", metavar="IMAGE.tar")
    ix.add_argument("-o", "--output", required=True, help="the archive to write")
    ix.add_argument("--tag", required=True, help="NAME[:TAG] of the multi-platform image")
    ix.add_argument("--check-reproducible", action="store_true",
                    help="write a second time elsewhere and fail if the bytes differ")
    ix.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                    help="show tracebacks on errors")
    push_options(ix)
    ix.set_defaults(run=cmd_index)

    df = sub.add_parser(
        "diff", help="what differs between two images",
        description="Files added, removed, changed in content, link, mode, owner or mtime, "
                    "and config fields, most useful first. Exit 1 when they differ.")
    df.add_argument("a", metavar="A")
    df.add_argument("b", metavar="B")
    _common_options(df)
    df.set_defaults(run=cmd_diff)

    wy = sub.add_parser(
        "why", help="say why a path is in an image",
        description="Print the chain that put PATH in the image: needed by whom, through "
                    "which search step, or which rule or recipe added it. TARGET is an image "
                    "archive slimmer wrote, or a program (the image pack would make of it).")
    wy.add_argument("target", metavar="IMAGE.tar|BIN")
    wy.add_argument("path", metavar="PATH")
    _common_options(wy)
    wy.set_defaults(run=cmd_why)

    ins = sub.add_parser(
        "inspect", help="list the files of an image, largest first, with reasons",
        description="List an image's files with sizes and reasons, largest first, with "
                    "totals. TARGET is an image archive (any tool's; reasons only for "
                    "slimmer's) or a program.")
    ins.add_argument("target", metavar="IMAGE.tar|BIN")
    ins.add_argument("--json", action="store_true", help="print a JSON document")
    _common_options(ins)
    ins.set_defaults(run=cmd_inspect)

    ps = sub.add_parser(
        "push", help="push an image archive to a registry",
        description="Push an image archive (an OCI layout tar such as slimmer writes, or a "
                    "layout directory) to a registry over the OCI distribution API, digests "
                    "unchanged. Credentials come from $DOCKER_CONFIG/config.json or "
                    "~/.docker/config.json. Prints REGISTRY/REPO@DIGEST for each reference.")
    ps.add_argument("archive", metavar="IMAGE.tar")
    ps.add_argument("references", nargs="+", metavar="REGISTRY/REPO:TAG",
                    help="where to push (several: later ones on the same registry mount the "
                         "blobs from the first)")
    ps.add_argument("--image", dest="push_image", metavar="NAME",
                    help="which image of an archive holding several")
    ps.add_argument("--mount-from", action="append", default=[], metavar="REPO",
                    help="a repository of the same registry that may hold the blobs: mount "
                         "them from it instead of uploading (repeatable)")
    _insecure_option(ps)
    ps.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                    help="show tracebacks on errors")
    ps.set_defaults(run=cmd_push)
    return top


def push_options(p: argparse.ArgumentParser) -> None:
    """--push and --insecure, for a command that writes an archive: call `push_written`
    once it is written (and `check_push` before, to refuse bad references early)."""
    p.add_argument("--push", action="append", default=[], metavar="REGISTRY/REPO:TAG",
                   help="push the archive to this registry reference once written "
                        "(repeatable)")
    _insecure_option(p)


def push_written(args: argparse.Namespace, archive: str, out: TextIO = sys.stdout) -> None:
    if args.push:
        _push(args, archive, args.push, out)


def _insecure_option(p: argparse.ArgumentParser) -> None:
    """--insecure, --timeout and --send-credentials-to-realm: how to talk to the registry."""
    p.add_argument("--insecure", action="store_true",
                   help="plain HTTP to the registry (only for a loopback host: 127.0.0.0/8, "
                        "::1, localhost); HTTPS otherwise")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="give up pushing after this long (default: no overall limit; each "
                        "request still times out after 30 s connecting, 60 s reading)")
    p.add_argument("--send-credentials-to-realm", action="store_true",
                   help="send config.json's credentials to a token service on another origin "
                        "than the registry (docs/push.md)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _cpu_options(p: argparse.ArgumentParser) -> None:
    """What the target CPU makes the loader search (`ld.so --help` on it says both)."""
    p.add_argument("--hwcaps", default="", metavar="LIST",
                   help="glibc-hwcaps subdirectories the target CPU supports, best first "
                        "(e.g. x86-64-v3,x86-64-v2); default: a baseline CPU")
    p.add_argument("--platform", default=None,
                   help="the target CPU's $PLATFORM, also a legacy hwcaps subdirectory for "
                        "glibc < 2.37 (e.g. haswell; default: the architecture's AT_PLATFORM)")


def _image_options(pk: argparse.ArgumentParser) -> None:
    pk.add_argument("-o", "--output", required=True, help="the image archive to write")
    pk.add_argument("--tag", help="NAME[:TAG] (default: the first program's name, tag latest)")
    pk.add_argument("--entrypoint", help="entrypoint as words or a JSON array (default: the "
                                         "first program, at its place in the image)")
    pk.add_argument("--cmd", help="cmd as words or a JSON array")
    pk.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="environment variable (repeatable; PATH is set by default)")
    pk.add_argument("--workdir", default="", help="working directory")
    pk.add_argument("--user", default="", help="root, nonroot (uid/gid 65532) or uid[:gid]")
    pk.add_argument("--label", action="append", default=[], metavar="K=V")
    pk.add_argument("--annotation", action="append", default=[], metavar="K=V",
                    help="manifest annotation (repeatable)")
    pk.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    pk.add_argument("--add", action="append", default=[], metavar="SRC:DEST[:UID:GID[:MODE]]",
                    help="host file or directory to add, with its own mode bits or MODE (octal), "
                         "owned by root or UID:GID; ELF files among them are resolved too "
                         "(repeatable)")
    _common_options(pk)
    _cpu_options(pk)
    pk.add_argument("--compress", choices=("gzip", "zstd", "none"), default="gzip",
                    help="layer compression: gzip (every engine), zstd (Docker 23+, podman, "
                         "containerd, skopeo; not Docker 20.10 or umoci) or none")
    pk.add_argument("--keep-setuid", action="store_true",
                    help="keep setuid/setgid bits (dropped by default)")
    pk.add_argument("--with", dest="with_features", action="append", default=[],
                    metavar="NAME", help="add files the program may need at run time: tzdata, "
                    "locales, shell, or force certs or gconv (repeatable)")
    pk.add_argument("--without", dest="without_features", action="append", default=[],
                    metavar="NAME", help="drop a rule that is on by default: libgcc_s, gconv, "
                    "certs, openssl, nss, ld-cache, dpkg-status (repeatable)")
    pk.add_argument("--gconv-charsets", action="append", default=[], metavar="LIST",
                    help="keep only the iconv modules for these charsets (comma-separated, "
                         "e.g. UTF-16,ISO-8859-1; default: all the root has)")
    pk.add_argument("--sbom", metavar="FILE", help="write an SPDX 2.3 JSON document: the "
                    "Debian packages files came from (name, version, purl, license) and every "
                    "file with its checksums")
    pk.add_argument("--lock", metavar="FILE", help="write every input (path, sha256, size, "
                    "Debian package and version), sorted, to FILE")
    pk.add_argument("--locked", metavar="FILE", help="refuse to build when the inputs no "
                    "longer match this lock file, naming what changed")
    pk.add_argument("--check-reproducible", action="store_true",
                    help="build a second time (other directory, umask, time zone) and fail "
                         "with the differences if the bytes are not the same")
    pk.add_argument("--no-recipes", action="store_true",
                    help="do not apply the built-in recipes that match the programs")
    push_options(pk)


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
        from slimmer.outputs import printable  # names from images: no fake lines

        print(f"error: {printable(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {printable(exc.hint)}", file=sys.stderr)
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


def run() -> None:
    """Console entry point."""
    sys.exit(main())
