"""`slimmer deps`: the files the loader opens for programs, as a tree, a list or JSON.

Its start-up is measured (docs/benchmarks.md): only the loader and cli.options are imported,
nothing of images or assembly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from slimmer.cli.options import (
    command,
    cpu_options,
    hwcaps,
    root_options,
    split_paths,
    verbose,
)
from slimmer.errors import SlimmerError, fit
from slimmer.loader.programs import find_program
from slimmer.loader.report import (
    closures_json,
    closures_json_text,
    file_list,
    missing_message,
    tree,
)
from slimmer.loader.resolve import Closure, Options, Resolver
from slimmer.loader.root import SysRoot


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deps = sub.add_parser("deps", help="show the files the loader opens for programs",
                          description="Show the libraries each program loads and how the "
                                      "loader finds them, like lddtree but exact.")
    deps.add_argument("binaries", nargs="+", metavar="BIN")
    root_options(deps)
    cpu_options(deps)
    deps.add_argument("--list", action="store_true",
                      help="print every file the loader opens, one path per line")
    deps.add_argument("--json", action="store_true",
                      help="print a JSON array with one object per program")
    command(deps, cmd_deps)


def cmd_deps(args: argparse.Namespace) -> int:
    if args.list and args.json:
        raise SlimmerError("--list and --json cannot be used together")
    sysroot = SysRoot(args.root)
    cwd = os.getcwd()
    options = Options(
        library_path=split_paths(args.library_path, cwd if args.root == "/" else None),
        hwcaps=hwcaps(args.hwcaps),
        platform=args.platform,
    )
    resolver = Resolver(sysroot, options)
    full = verbose(args)
    closures: list[Closure] = [resolver.closure(find_program(sysroot, b, cwd))
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
                print(fit(f"warning: {warning}", full), file=sys.stderr)
    problem = missing_message(closures, full)
    if problem:
        sys.stdout.flush()
        for line in problem.splitlines():
            print(fit(f"error: {line}", full), file=sys.stderr)
        return 1
    return 0
