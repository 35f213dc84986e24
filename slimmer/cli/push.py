"""`slimmer push`, and --push for the commands that write an archive."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from slimmer.cli.options import command, debug_option, registry_options
from slimmer.errors import SlimmerError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    registry_options(ps)
    debug_option(ps)
    command(ps, cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    _push(args, os.path.join(os.getcwd(), args.archive), args.references)
    return 0


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


def push_written(args: argparse.Namespace, archive: str, out: TextIO | None = None) -> None:
    """Push the archive a command wrote to its --push references, if any."""
    if args.push:
        _push(args, archive, args.push, out or sys.stdout)


def _docker_config_path(environ: Mapping[str, str]) -> str:
    """Where Docker keeps credentials: $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    directory = environ.get("DOCKER_CONFIG") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def _push(args: argparse.Namespace, archive: str, references: Sequence[str],
          out: TextIO | None = None) -> None:
    """Push `archive` to each reference and print what was sent and the pinned digest."""
    from slimmer.registry.auth import read_docker_config
    from slimmer.registry.client import ClientOptions
    from slimmer.registry.push import PushOptions, push

    out = out or sys.stdout
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
