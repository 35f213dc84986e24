"""The option groups several commands share, each declared once, and the parsing of their
values into what the library takes.

Only argparse, os and json here: `slimmer deps` imports this module, and its start-up is kept
lean (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from slimmer.errors import SlimmerError

if TYPE_CHECKING:
    from slimmer.assemble.probing import ProbeOptions

Run = Callable[[argparse.Namespace], int]


def verbose(args: argparse.Namespace) -> bool:
    """--verbose or --debug: every line whole, every list in full."""
    return bool(getattr(args, "verbose", False) or getattr(args, "debug", False))


def command(p: argparse.ArgumentParser, run: Run) -> None:
    """What `main` calls for this command; the parser is kept to write the command line
    again (--check-reproducible runs it a second time in a child process)."""
    p.set_defaults(run=run, command_parser=p)


def debug_option(p: argparse.ArgumentParser, top: bool = False) -> None:
    """--debug and --verbose, before or after the command: the top level gives the default, a
    command's own leaves it alone when absent (SUPPRESS) so `slimmer --debug deps ...` keeps
    it."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default,
                   help="show tracebacks on errors (and what --verbose shows)")
    p.add_argument("--verbose", action="store_true", default=default,
                   help="print messages whole (else each line is cut at 300 characters) and "
                        "every missing library with its full search")


def root_options(p: argparse.ArgumentParser) -> None:
    """--debug, --root and --library-path: where programs and their libraries are found."""
    debug_option(p)
    p.add_argument("--root", default="/", metavar="DIR",
                   help="resolve (and take files) as if DIR were / (default: /)")
    p.add_argument("--library-path", action="append", default=[], metavar="DIR[:DIR]",
                   help="the LD_LIBRARY_PATH the program will run with (repeatable)")


def cpu_options(p: argparse.ArgumentParser) -> None:
    """What the target CPU makes the loader search (`ld.so --help` on it says both)."""
    p.add_argument("--hwcaps", default="", metavar="LIST",
                   help="glibc-hwcaps subdirectories the target CPU supports, best first "
                        "(e.g. x86-64-v3,x86-64-v2); default: a baseline CPU")
    p.add_argument("--platform", default=None,
                   help="the target CPU's $PLATFORM, also a legacy hwcaps subdirectory for "
                        "glibc < 2.37 (e.g. haswell; default: the architecture's AT_PLATFORM)")


def check_reproducible_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--check-reproducible", action="store_true", help=help)


def image_options(p: argparse.ArgumentParser) -> None:
    """What pack, build and slim share: the output, the image's config, the rules."""
    p.add_argument("-o", "--output", required=True, help="the image archive to write")
    p.add_argument("--tag", help="NAME[:TAG] (default: the first program's name, tag latest)")
    p.add_argument("--entrypoint", help="entrypoint as words or a JSON array (default: the "
                                        "first program, at its place in the image)")
    p.add_argument("--cmd", help="cmd as words or a JSON array")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="environment variable (repeatable; PATH is set by default)")
    p.add_argument("--workdir", default="", help="working directory")
    p.add_argument("--user", default="", help="root, nonroot (uid/gid 65532) or uid[:gid]")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--annotation", action="append", default=[], metavar="K=V",
                   help="manifest annotation (repeatable)")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST[:UID:GID[:MODE]]",
                   help="host file or directory to add, with its own mode bits or MODE (octal), "
                        "owned by root or UID:GID; ELF files among them are resolved too "
                        "(repeatable)")
    root_options(p)
    cpu_options(p)
    p.add_argument("--compress", choices=("gzip", "zstd", "none"), default="gzip",
                   help="layer compression: gzip (every engine), zstd (Docker 23+, podman, "
                        "containerd, skopeo; not Docker 20.10 or umoci) or none")
    p.add_argument("--layers", type=_layers, default="1", metavar="auto|N",
                   help="split the image into layers, most shared first (loader and libc; "
                        "libraries; runtime data; the application): auto, or at most N "
                        "(default 1; docs/layers.md)")
    p.add_argument("--keep-setuid", action="store_true",
                   help="keep setuid/setgid bits (dropped by default)")
    p.add_argument("--with", dest="with_features", action="append", default=[],
                   metavar="NAME", help="add files the program may need at run time: tzdata, "
                   "locales, shell, or force certs or gconv (repeatable)")
    p.add_argument("--without", dest="without_features", action="append", default=[],
                   metavar="NAME", help="drop a rule that is on by default: libgcc_s, gconv, "
                   "certs, openssl, nss, ld-cache, dpkg-status, terminfo, evidence-packages, "
                   "compiled-paths, dlopen, script-packages; or shell, tzdata, locales where "
                   "evidence turns them on (repeatable)")
    p.add_argument("--gconv-charsets", action="append", default=[], metavar="LIST",
                   help="keep only the iconv modules for these charsets (comma-separated, "
                        "e.g. UTF-16,ISO-8859-1; default: all the root has)")
    p.add_argument("--sbom", metavar="FILE", help="write an SPDX 2.3 JSON document: the "
                   "Debian packages files came from (name, version, purl, license) and every "
                   "file with its checksums")
    p.add_argument("--lock", metavar="FILE", help="write every input (path, sha256, size, "
                   "Debian package and version), sorted, to FILE")
    p.add_argument("--locked", metavar="FILE", help="refuse to build when the inputs no "
                   "longer match this lock file, naming what changed")
    check_reproducible_option(p, "build a second time (other directory, umask, time zone) and "
                                 "fail with the differences if the bytes are not the same")
    p.add_argument("--report", choices=("text", "json"), default="text",
                   help="json: a report for machines on stdout instead of the summary (files, "
                        "bytes, image id, warnings; or the error)")
    p.add_argument("--no-recipes", action="store_true",
                   help="do not apply the built-in recipes that match the programs")
    probe_options(p)
    speed_options(p)
    push_options(p)


def probe_options(p: argparse.ArgumentParser) -> None:
    """--probe-args, --probe-stdin, --probe-timeout (slim adds --probe): run the workload once
    in a sandbox (bubblewrap + strace) and keep what it touched (README, "--probe")."""
    p.add_argument("--probe-args", action="append", default=[], metavar="ARGS",
                   help="probe: run the program (slim: the Entrypoint) with these arguments "
                        "(words or a JSON array; repeatable: one run each)")
    p.add_argument("--probe-stdin", metavar="FILE", help="probe: the workload's standard input")
    p.add_argument("--probe-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="probe: stop each run after this long (default 30; a server is "
                        "probed until then)")


def speed_options(p: argparse.ArgumentParser) -> None:
    """The layer cache and what is shown while working."""
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the layer cache")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="keep compressed layers here (default: $XDG_CACHE_HOME/slimmer, else "
                        "~/.cache/slimmer; at most 2 GiB, least recently used removed first)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no summary; warnings and errors are still shown")


def push_options(p: argparse.ArgumentParser) -> None:
    """--push and the registry options, for a command that writes an archive: it calls
    cli.push's `check_push` before writing and `push_written` once written."""
    p.add_argument("--push", action="append", default=[], metavar="REGISTRY/REPO:TAG",
                   help="push the archive to this registry reference once written "
                        "(repeatable)")
    registry_options(p)
    sign_options(p)


def sign_options(p: argparse.ArgumentParser) -> None:
    """--sign-key, --sign-password-env, --attach-sbom: sign what is pushed and attach its
    SBOM, cosign's way."""
    p.add_argument("--sign-key", metavar="KEY.pem",
                   help="sign each pushed manifest with this ECDSA P-256 or Ed25519 private "
                        "key (PEM), as cosign does: REPO:sha256-<hex>.sig (docs/push.md)")
    p.add_argument("--sign-password-env", metavar="NAME",
                   help="the environment variable holding the password of an encrypted "
                        "--sign-key")
    p.add_argument("--attach-sbom", metavar="FILE.spdx.json",
                   help="attach this SPDX JSON document (what --sbom writes) to each pushed "
                        "manifest, as cosign does: REPO:sha256-<hex>.sbom")


def registry_options(p: argparse.ArgumentParser) -> None:
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


def _layers(text: str) -> str:
    """--layers: auto or a count from 1 to 127 (overlayfs stacks at most 128), checked and
    kept as written (layer_count turns it into what the library takes)."""
    if text != "auto" and not (text.isdecimal() and 1 <= int(text) <= 127):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto or a number from 1 to 127")
    return text


def layer_count(text: str) -> int | None:
    """A checked --layers value: None for auto, else the count."""
    return None if text == "auto" else int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


# ---- option values -------------------------------------------------------------------------


def split_paths(values: Sequence[str], cwd: str | None = None) -> tuple[str, ...]:
    """--library-path values, split. With `cwd` (programs of the host root), a relative
    directory is relative to it, as program paths and -o are; otherwise to the root's `/`."""
    out: list[str] = []
    for value in values:
        out.extend(os.path.normpath(os.path.join(cwd, p)) if cwd is not None else p
                   for p in value.replace(";", ":").split(":") if p)
    return tuple(out)


def hwcaps(value: str) -> tuple[str, ...]:
    return tuple(h for h in value.split(",") if h)


def pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise SlimmerError(f"{option} {value}: expected KEY=VALUE")
        out[key] = val
    return out


def probe_args(args: argparse.Namespace, always: bool) -> ProbeOptions | None:
    """The probe asked for (`always`: --probe given), or None."""
    if not (always or args.probe_args):
        return None
    from slimmer.assemble.probing import ProbeOptions

    cwd = os.getcwd()
    return ProbeOptions(
        tuple(words(a, "--probe-args") or () for a in args.probe_args),
        os.path.join(cwd, args.probe_stdin) if args.probe_stdin else None,
        args.probe_timeout, os.environ.get("PATH", os.defpath))


def words(value: str | None, option: str) -> tuple[str, ...] | None:
    """A JSON array (exec form) or a shell-like string split into words."""
    if value is None:
        return None
    if value.lstrip().startswith("["):
        try:
            found = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SlimmerError(f"{option}: invalid JSON array ({exc.msg})") from None
        if not isinstance(found, list) or not all(isinstance(w, str) for w in found):
            raise SlimmerError(f"{option}: expected a JSON array of strings")
        return tuple(found)
    try:
        import shlex  # here: only pack, build and slim need it

        return tuple(shlex.split(value))
    except ValueError as exc:
        raise SlimmerError(f"{option} {value!r}: {exc}") from None


def source_date_epoch(environ: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH as the reproducible-builds spec has it: an ASCII integer; unset (or
    empty): DEFAULT_EPOCH, 1980-01-02, a time every archive format accepts."""
    from slimmer.image.model import DEFAULT_EPOCH  # here: `deps` does not load the model

    raw = environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return DEFAULT_EPOCH
    if not raw.isascii() or not raw.isdigit():
        raise SlimmerError(f"SOURCE_DATE_EPOCH={raw!r}: not a non-negative integer")
    value = int(raw)
    if value >= 8**11:  # the largest mtime a plain tar header holds
        raise SlimmerError(f"SOURCE_DATE_EPOCH={raw!r}: too large")
    return value
