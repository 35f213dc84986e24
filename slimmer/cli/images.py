"""`slimmer verify`, `index`, `diff`, `why` and `inspect`: the commands that read images (and
`index`, which combines them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from slimmer.cli.options import (
    check_reproducible_option,
    command,
    debug_option,
    push_options,
    registry_options,
    root_options,
    source_date_epoch,
    split_paths,
)
from slimmer.cli.push import check_push, push_written
from slimmer.cli.shared import check_reproducible, rebuild, summary_stream
from slimmer.errors import SlimmerError, fit

if TYPE_CHECKING:
    from slimmer.image.explain import ImageView


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vf = sub.add_parser(
        "verify", help="check an image archive's digests, sizes and manifests, offline; or "
                       "an image's signature at a registry (--key)",
        description="Check every blob's digest and size, the layers' diff_ids, and that "
                    "config, manifest, index.json and manifest.json agree. Exit 1 with each "
                    "problem named. Works on archives made by other tools too. With --key, "
                    "TARGET is REGISTRY/REPO@DIGEST (or :TAG) and its cosign signature "
                    "(REPO:sha256-<hex>.sig) is checked with the public key: the signature over "
                    "the payload, and that the payload names that digest and repository.")
    vf.add_argument("archive", metavar="IMAGE.tar|REGISTRY/REPO@DIGEST")
    vf.add_argument("--key", metavar="PUB.pem",
                    help="check the image's signature at the registry with this ECDSA P-256 "
                         "or Ed25519 public key (PEM)")
    root_options(vf)
    registry_options(vf)
    command(vf, cmd_verify)

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
    check_reproducible_option(ix, "write a second time elsewhere and fail if the bytes differ")
    debug_option(ix)
    push_options(ix)
    command(ix, cmd_index)

    df = sub.add_parser(
        "diff", help="what differs between two images",
        description="Files added, removed, changed in content, link, mode, owner or mtime, "
                    "and config fields, most useful first. Exit 1 when they differ.")
    df.add_argument("a", metavar="A")
    df.add_argument("b", metavar="B")
    root_options(df)
    command(df, cmd_diff)

    wy = sub.add_parser(
        "why", help="say why a path is in an image",
        description="Print the chain that put PATH in the image: needed by whom, through "
                    "which search step, or which rule or recipe added it. TARGET is an image "
                    "archive slimmer wrote, or a program (the image pack would make of it).")
    wy.add_argument("target", metavar="IMAGE.tar|BIN")
    wy.add_argument("path", metavar="PATH")
    root_options(wy)
    command(wy, cmd_why)

    ins = sub.add_parser(
        "inspect", help="list the files of an image, largest first, with reasons",
        description="List an image's files with sizes and reasons, largest first, with "
                    "totals. TARGET is an image archive (any tool's; reasons only for "
                    "slimmer's) or a program.")
    ins.add_argument("target", metavar="IMAGE.tar|BIN")
    ins.add_argument("--json", action="store_true", help="print a JSON document")
    root_options(ins)
    command(ins, cmd_inspect)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.key:
        return _verify_signature(args)
    for flag, given in (("--insecure", args.insecure), ("--timeout", args.timeout is not None),
                        ("--send-credentials-to-realm", args.send_credentials_to_realm)):
        if given:
            raise SlimmerError(f"{flag} is about a registry: give --key PUB.pem and "
                               "REGISTRY/REPO@DIGEST")
    from slimmer.image.verify import verify

    found = verify(os.path.join(os.getcwd(), args.archive))
    from slimmer.cli.options import verbose

    for problem in found.problems:
        print(fit(f"problem: {problem}", verbose(args)))
    for note in found.notes:
        print(fit(f"note: {note}", verbose(args)))
    if found.ok:
        print(f"ok: {args.archive}: {found.checked} blobs and {found.layers} layers checked; "
              "digests, sizes, diff_ids and manifests agree")
        return 0
    sys.stdout.flush()
    count = len(found.problems)
    raise SlimmerError(f"{args.archive}: {count} problem{'s' if count != 1 else ''} (listed "
                       "above)")


def _verify_signature(args: argparse.Namespace) -> int:
    """verify --key: the cosign signature of REGISTRY/REPO@DIGEST."""
    from slimmer.cli.push import client_options
    from slimmer.registry.client import Client
    from slimmer.registry.sign import load_public_key, parse_signed_reference, verify_signature

    if os.path.exists(os.path.join(os.getcwd(), args.archive)):
        raise SlimmerError(f"{args.archive}: --key checks an image's signature at a registry: "
                           "give REGISTRY/REPO@DIGEST, not a file")
    key = load_public_key(os.path.join(os.getcwd(), args.key))
    dest, digest = parse_signed_reference(args.archive)
    client = Client(dest, client_options(args))
    try:
        checked = verify_signature(client, dest, digest, key, args.key)
    finally:
        client.close()
    print(f"ok: {checked.reference}: signed with {args.key} ({checked.signature}); the "
          "payload names this digest and repository")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from slimmer.image.index import write_index
    from slimmer.image.reference import parse_reference

    check_push(args)
    cwd = os.getcwd()
    inputs = [os.path.join(cwd, a) for a in args.archives]
    output = os.path.join(cwd, args.output)
    ref = parse_reference(args.tag)
    result = write_index(inputs, output, ref, source_date_epoch(os.environ))
    out = summary_stream(output)
    print(f"wrote {result.path}: {ref.short}, {len(result.images)} platforms, "
          f"archive {result.archive_size / 1e6:.1f} MB", file=out)
    print(f"index {result.index_digest}", file=out)
    for image in result.images:
        print(f"  {image.name}: manifest {image.manifest['digest']} ({image.source})", file=out)
    if args.check_reproducible:
        check_reproducible(output, rebuild(args))
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

    print("\n".join(format_why(why(_target(args), args.path))))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from slimmer.image.explain import format_inventory, inventory

    view = _target(args)
    doc = inventory(view.tree, view.layers)
    if args.json:
        print(json.dumps(doc, indent=2 if sys.stdout.isatty() else None))
    else:
        print("\n".join(format_inventory(doc)))
    return 0


def _target(args: argparse.Namespace) -> ImageView:
    from slimmer.assemble.target import image_or_program

    cwd = os.getcwd()
    return image_or_program(args.target, cwd, args.root, split_paths(
        args.library_path, cwd if args.root == "/" else None))
