"""`slimmer push`, and --push for the commands that write an archive."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from slimmer.cli.options import command, debug_option, registry_options, sign_options
from slimmer.errors import SlimmerError

if TYPE_CHECKING:
    from slimmer.registry.attach import Blob
    from slimmer.registry.client import ClientOptions
    from slimmer.registry.sign import Signer


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
    sign_options(ps)
    debug_option(ps)
    command(ps, cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    _push(args, os.path.join(os.getcwd(), args.archive), args.references)
    return 0


def check_push(args: argparse.Namespace) -> None:
    """Refuse a bad --push reference (or --insecure for it) before building anything."""
    for flag, given in (("--insecure", args.insecure), ("--timeout", args.timeout is not None),
                        ("--send-credentials-to-realm", args.send_credentials_to_realm),
                        ("--sign-key", args.sign_key is not None),
                        ("--attach-sbom", args.attach_sbom is not None)):
        if given and not args.push:
            raise SlimmerError(f"{flag} is about --push: give --push REGISTRY/REPO:TAG")
    signer(args)  # a key that cannot be used is refused before anything is built
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


def signer(args: argparse.Namespace) -> Signer | None:
    """The key of --sign-key, its password from the variable --sign-password-env names."""
    if args.sign_password_env and not args.sign_key:
        raise SlimmerError("--sign-password-env is about --sign-key: give --sign-key KEY.pem")
    if not args.sign_key:
        return None
    from slimmer.registry.sign import load_signer

    password = None
    if args.sign_password_env:
        value = os.environ.get(args.sign_password_env)
        if value is None:
            raise SlimmerError(f"--sign-password-env {args.sign_password_env}: no such "
                               "environment variable")
        password = value.encode()
    return load_signer(os.path.join(os.getcwd(), args.sign_key), password)


def _docker_config_path(environ: Mapping[str, str]) -> str:
    """Where Docker keeps credentials: $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    directory = environ.get("DOCKER_CONFIG") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def _sbom(args: argparse.Namespace) -> Blob | None:
    if not args.attach_sbom:
        return None
    from slimmer.registry.attach import read_sbom

    return read_sbom(os.path.join(os.getcwd(), args.attach_sbom))


def client_options(args: argparse.Namespace) -> ClientOptions:
    """How to talk to a registry: the registry options and Docker's config.json."""
    from slimmer.registry.auth import read_docker_config
    from slimmer.registry.client import ClientOptions

    config = read_docker_config(_docker_config_path(os.environ))
    return ClientOptions(insecure=args.insecure, docker_config=config, timeout=args.timeout,
                         realm_credentials=args.send_credentials_to_realm)


def _push(args: argparse.Namespace, archive: str, references: Sequence[str],
          out: TextIO | None = None) -> None:
    """Push `archive` to each reference and print what was sent and the pinned digest."""
    from slimmer.registry.push import PushOptions, push

    out = out or sys.stdout
    options = PushOptions(client_options(args),
                          image=getattr(args, "push_image", None),
                          mount_from=tuple(getattr(args, "mount_from", ())),
                          signer=signer(args), sbom=_sbom(args))
    for result in push(archive, references, options):
        blobs = result.uploaded + result.existing + result.mounted
        retried = f", {result.retries} retried" if result.retries else ""
        print(f"pushed {result.destination}: {blobs} blobs ({result.uploaded} uploaded, "
              f"{result.existing} already there, {result.mounted} mounted), "
              f"{_mb(result.bytes_uploaded)} sent, {_mb(result.bytes_existing)} already there, "
              f"{_mb(result.bytes_mounted)} mounted, {result.manifests} manifests{retried}",
              file=out)
        if result.signature:
            print(f"signed {result.pinned}: {result.signature}", file=out)
        if result.sbom:
            print(f"attached the SBOM to {result.pinned}: {result.sbom}", file=out)
        print(result.pinned, file=out)


def _mb(size: int) -> str:
    """Bytes as MB with one decimal; under 0.1 MB but not nothing, in kB (a config blob)."""
    if 0 < size < 100_000:
        return f"{size / 1e3:.1f} kB"
    return f"{size / 1e6:.1f} MB"
