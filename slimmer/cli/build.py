"""`slimmer pack`, `build` and `slim`: the commands that assemble an image and write it.

The library is imported inside the commands: tarfile, zstandard and the writer cost start-up
time that `deps` must not pay (cli/__init__ imports this module only for these commands).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, TextIO

from slimmer.cli.options import (
    command,
    hwcaps,
    image_options,
    layer_count,
    pairs,
    probe_args,
    source_date_epoch,
    split_paths,
    words,
)
from slimmer.cli.push import check_push, push_written
from slimmer.cli.shared import (
    cache_dir,
    check_reproducible,
    progress,
    rebuild,
    summary_stream,
    workers,
)
from slimmer.errors import SlimmerError
from slimmer.loader.programs import find_program
from slimmer.loader.root import SysRoot

if TYPE_CHECKING:
    from slimmer.assemble.options import BuildOptions, OutputOptions
    from slimmer.assemble.pack import PackResult
    from slimmer.assemble.probing import Probe
    from slimmer.assemble.recipe import Recipe
    from slimmer.assemble.slim import SlimResult
    from slimmer.assemble.spec import ImageSpec
    from slimmer.tree import FileTree


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pk = sub.add_parser(
        "pack", help="pack programs into an image archive",
        description="Pack programs and exactly the files they load into one image archive "
                    "that docker load, podman load, skopeo, umoci and ctr accept. The same "
                    "inputs give the same bytes; SOURCE_DATE_EPOCH sets the timestamps "
                    "(default 1980-01-02, a time zip and jar accept).")
    pk.add_argument("binaries", nargs="+", metavar="BIN")
    pk.add_argument("--recipe", action="append", default=[], metavar="FILE",
                    help="apply this recipe too (repeatable)")
    image_options(pk)
    command(pk, cmd_pack)

    bd = sub.add_parser(
        "build", help="build an image from a recipe",
        description="Build an image from a built-in recipe (by name) or a recipe file: its "
                    "programs, files and defaults; the options override it.")
    bd.add_argument("recipe_name", metavar="NAME|FILE")
    image_options(bd)
    command(bd, cmd_build)

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
    sl.add_argument("--probe", action="store_true",
                    help="run the image's Entrypoint and Cmd once in a sandbox (bubblewrap + "
                         "strace) and keep every file it touched (with --lock, recorded so "
                         "that --locked builds the same image without running anything)")
    image_options(sl)
    command(sl, cmd_slim)


def cmd_pack(args: argparse.Namespace) -> int:
    from slimmer.assemble.recipe import load_recipe

    recipes = tuple(load_recipe(os.path.join(os.getcwd(), r)) for r in args.recipe)
    return _pack(args, args.binaries, recipes, args.tag)


def cmd_build(args: argparse.Namespace) -> int:
    from slimmer.assemble.recipe import find_recipe

    given = args.recipe_name
    recipe = find_recipe(os.path.join(os.getcwd(), given) if "/" in given else given)
    if not recipe.programs:
        raise SlimmerError(f"{recipe.source}: recipe {recipe.name} names no programs to build")
    return _pack(args, list(recipe.programs), (recipe,), args.tag or f"{recipe.name}:latest")


def _pack(args: argparse.Namespace, binaries: list[str], recipes: tuple[Recipe, ...],
          tag: str | None) -> int:
    from slimmer.assemble.pack import pack

    check_push(args)
    sysroot = SysRoot(args.root)
    cwd = os.getcwd()
    image, build, output = _pack_options(
        args, tuple(find_program(sysroot, b, cwd) for b in binaries), recipes, tag)
    options = probe_args(args, False)
    probe = None
    if options is not None:
        from dataclasses import replace

        from slimmer.assemble.probing import probe_report, probe_root

        probe = probe_root(sysroot, args.root, build.programs[0], image.config, build.users,
                           options)
        build = replace(build, probed=probe.kept)
    with progress(args.quiet or args.report == "json") as shown:
        result = pack(image, build, output, shown)
    if probe is not None and not args.quiet:
        _print_probe(args, probe, result.tree)
    if args.report == "json":
        report = pack_report(result)
        if probe is not None:
            report["probe"] = probe_report(probe, result.tree)
        _print_json(report, summary_stream(output.path))
    else:
        _print_result(args, result, summary_stream(output.path), args.quiet)
    if args.check_reproducible:
        check_reproducible(output.path, rebuild(args),
                           sys.stderr if args.report == "json" else None)
    push_written(args, output.path, sys.stderr if args.report == "json" else sys.stdout)
    return 0


def pack_report(result: PackResult) -> dict[str, object]:
    """pack's and build's --report json: what was written, and the warnings (as slim's)."""
    image = result.image
    return {"output": image.path, "tag": image.reference.short,
            "files": result.tree.file_count(), "bytes": result.content_bytes,
            "archive_bytes": image.archive_size, "image_id": image.config_digest,
            "manifest": image.manifest_digest,
            "warnings": [w.as_json() for w in result.warnings]}


def cmd_slim(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from slimmer.assemble.slim import slim

    check_push(args)
    image, build, output = _pack_options(args, (), (), args.tag)
    build = replace(build, keep=tuple(args.keep))
    with progress(args.quiet or args.report == "json") as shown:
        result = slim(os.path.join(os.getcwd(), args.input), image, build, output, args.image,
                      shown, probe_args(args, args.probe))
    if result.probe is not None and not args.quiet:
        _print_probe(args, result.probe, result.packed.tree)
    if args.check_reproducible:
        check_reproducible(output.path, rebuild(args),
                           sys.stderr if args.report == "json" else None)
    report = result.report()
    if args.report == "json":
        _print_json(report, summary_stream(output.path))
    elif args.quiet:
        _print_result(args, result.packed, summary_stream(output.path), quiet=True)
    else:
        _print_slimmed(args, result, summary_stream(output.path))
    # A JSON report owns stdout: what was pushed goes to stderr then.
    push_written(args, output.path, sys.stderr if args.report == "json" else sys.stdout)
    return 0


def _print_probe(args: argparse.Namespace, probe: Probe, tree: FileTree) -> None:
    from slimmer.assemble.probing import summary
    from slimmer.cli.options import verbose
    from slimmer.errors import fit

    for line in summary(probe, tree):
        print(fit(line, verbose(args)), file=sys.stderr)


def _print_json(report: object, out: TextIO) -> None:
    """A --report json document: on stdout (stderr when the archive went there), indented
    on a terminal."""
    print(json.dumps(report, indent=2 if out.isatty() else None), file=out)


def _print_slimmed(args: argparse.Namespace, result: SlimResult, out: TextIO) -> None:
    report = result.report()
    _print_result(args, result.packed, out)
    before, after = report["before"], report["after"]
    share = after["bytes"] / before["bytes"] if before["bytes"] else 0.0
    print(f"slimmed {result.reference or args.input} (entry {result.program}): "
          f"{before['files']} files, {before['bytes'] / 1e6:.1f} MB -> {after['files']} files, "
          f"{after['bytes'] / 1e6:.1f} MB ({share:.0%})")


def _print_result(args: argparse.Namespace, result: PackResult, out: TextIO,
                  quiet: bool = False) -> None:
    from slimmer.cli.options import verbose
    from slimmer.errors import fit

    for warning in result.warnings:  # cut at the one length every message keeps
        print(fit(f"warning: {warning}", verbose(args)), file=sys.stderr)
    if quiet:
        return
    image = result.image
    layers = f" in {len(image.layers)} layers" if len(image.layers) > 1 else ""
    print(f"wrote {image.path}: {image.reference.short}, {result.files} entries, "
          f"{result.content_bytes / 1e6:.1f} MB of files, "
          f"archive {image.archive_size / 1e6:.1f} MB{layers}", file=out)
    print(f"image id {image.config_digest}", file=out)
    print(f"manifest {image.manifest_digest}", file=out)


def _pack_options(args: argparse.Namespace, programs: tuple[str, ...],
                  recipes: tuple[Recipe, ...], tag: str | None
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
        entrypoint=words(args.entrypoint, "--entrypoint"),
        cmd=words(args.cmd, "--cmd"),
        env=tuple(args.env),
        working_dir=args.workdir,
        user=args.user,
        labels=pairs(args.label, "--label"),
        exposed_ports=tuple(args.expose),
    ), annotations=pairs(args.annotation, "--annotation"))
    output = OutputOptions(os.path.join(cwd, args.output), tag)
    return image, BuildOptions(
        programs=programs,
        root=args.root,
        add=tuple(adds),
        # slim (no programs given) resolves inside the image: its paths are the image's
        library_path=split_paths(args.library_path,
                                 cwd if args.root == "/" and programs else None),
        hwcaps=hwcaps(args.hwcaps),
        platform=args.platform,
        compression=args.compress,
        layers=layer_count(args.layers),
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
        workers=workers(),
        cache_dir=cache_dir(args, os.environ),
    ), output
