"""Files a program needs beyond what the loader opens at start-up: libraries glibc dlopens, data
files libraries read. Each rule looks at the closures (their libraries and the symbols they
import) and names what to add from the root, and why. See ../shared/reference/runtime-needs.md.

Rules on by default (each can be dropped with --without NAME):
  libgcc_s  libgcc_s.so.1 when an object imports pthread_cancel/pthread_exit or the closure is C++
  gconv     the root's gconv modules when an object imports iconv_open
  certs     the CA bundle when the closure has a TLS library
  openssl   openssl.cnf and the providers (ossl-modules) when libcrypto is in the closure
  nss       libnss_files, libnss_dns and libresolv for glibc before 2.34
On request (--with NAME): tzdata (zoneinfo, /etc/localtime = UTC), shell (/bin/sh), and certs or
gconv forced on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slimmer.elf import read_imports
from slimmer.errors import SlimmerError
from slimmer.resolve import Closure
from slimmer.sysroot import SysRoot

DEFAULT_ON = ("libgcc_s", "gconv", "certs", "openssl", "nss", "ld-cache")
ON_REQUEST = ("tzdata", "shell")
FEATURES = DEFAULT_ON + ON_REQUEST

CANCEL_SYMBOLS = frozenset({"pthread_cancel", "pthread_exit"})
TLS_LIBRARIES = ("libssl.so", "libgnutls.so", "libnss3.so", "libcurl.so", "libcurl-gnutls.so")
# Where each TLS stack looks for CA certificates on Debian (and the paths Go probes elsewhere).
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
              "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem")
CA_LINKS = ("/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs")


@dataclass(frozen=True, slots=True)
class Needs:
    """What the rules ask for: libraries to load as dlopen would, paths to copy from the root."""

    libraries: tuple[tuple[str, str], ...] = ()  # (soname, reason)
    paths: tuple[tuple[str, str], ...] = ()  # (in-root path, reason); directories recursively
    links: tuple[tuple[str, str, str], ...] = ()  # (image path, target, reason)


def check_features(names: Iterable[str], option: str) -> frozenset[str]:
    chosen = frozenset(names)
    unknown = sorted(chosen - set(FEATURES))
    if unknown:
        raise SlimmerError(f"{option} {unknown[0]}: unknown feature (known: "
                           f"{', '.join(FEATURES)})")
    return chosen


def enabled(with_: frozenset[str], without: frozenset[str]) -> frozenset[str]:
    both = with_ & without
    if both:
        raise SlimmerError(f"--with and --without both name {sorted(both)[0]}")
    return (frozenset(DEFAULT_ON) | with_) - without


def find_needs(root: SysRoot, closures: list[Closure], features: frozenset[str],
               forced: frozenset[str] = frozenset(),
               show: Callable[[str], str] = str) -> Needs:
    """Apply every enabled rule to the programs' closures; `forced` (from --with) adds certs or
    gconv even where no library asks for them. `show` turns a path into the one reasons name
    (its place in the image)."""
    libraries: list[tuple[str, str]] = []
    paths: list[tuple[str, str]] = []
    links: list[tuple[str, str, str]] = []
    objects = [(c.real, c.binary) for c in closures] + [
        (lib.real, lib.path) for c in closures for lib in c.libraries]
    sonames = {lib.elf.soname or lib.soname for c in closures for lib in c.libraries}
    imports = _imports(root, objects, show) if features & {"libgcc_s", "gconv"} else {}

    if "libgcc_s" in features and "libgcc_s.so.1" not in sonames:
        users = sorted(p for p, names in imports.items() if names & CANCEL_SYMBOLS)
        if users:
            libraries.append(("libgcc_s.so.1", f"glibc dlopens it for pthread_cancel/"
                                               f"pthread_exit, used by {users[0]}"))
        elif any(s.startswith("libstdc++.so") for s in sonames):
            libraries.append(("libgcc_s.so.1", "C++ exceptions unwind through it"))
    if "gconv" in features:
        users = sorted(p for p, names in imports.items() if "iconv_open" in names)
        if "gconv" in forced:
            users = users or ["--with gconv"]
        libc = _libc(closures)
        if users and libc is not None:
            gconv = f"{os.path.dirname(libc)}/gconv"
            if root.is_dir(gconv):
                paths.append((gconv, f"iconv modules: {users[0]} calls iconv_open"))
    tls = sorted(s for s in sonames if s.startswith(TLS_LIBRARIES))
    if "certs" in features and (tls or "certs" in forced):
        reason = f"CA certificates for {tls[0]}" if tls else "--with certs"
        paths.extend((p, reason) for p in CA_BUNDLES if root.lookup(p))
        for p in CA_LINKS:  # the links only: the directory behind them holds just the bundle
            found = root.lookup(p)
            if found is not None:
                links.extend((link.path, link.target, reason) for link in found.links)
    crypto = sorted(s for s in sonames if s.startswith("libcrypto.so"))
    if "openssl" in features and crypto:
        libc = _libc(closures)
        reason = f"OpenSSL configuration and providers for {crypto[0]}"
        for path in ("/usr/lib/ssl/openssl.cnf", "/etc/ssl/openssl.cnf"):
            if root.lookup(path):
                paths.append((path, reason))
        if libc is not None and root.is_dir(f"{os.path.dirname(libc)}/ossl-modules"):
            paths.append((f"{os.path.dirname(libc)}/ossl-modules", reason))
    if "nss" in features:
        version = _glibc_version(root, closures)
        if version is not None and version < (2, 34):
            for soname in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):
                libraries.append((soname, f"glibc {version[0]}.{version[1]} loads it for "
                                          "user, group and host lookups"))
    if "tzdata" in features and root.is_dir("/usr/share/zoneinfo"):
        paths.append(("/usr/share/zoneinfo", "--with tzdata"))
        links.append(("/etc/localtime", "/usr/share/zoneinfo/UTC", "--with tzdata: UTC"))
    if "shell" in features:
        paths.append(("/bin/sh", "--with shell"))
    return Needs(tuple(libraries), tuple(paths), tuple(links))


def _imports(root: SysRoot, objects: list[tuple[str, str]],
             show: Callable[[str], str]) -> dict[str, frozenset[str]]:
    seen: dict[str, frozenset[str]] = {}
    for real, shown in objects:
        if show(shown) not in seen:
            seen[show(shown)] = read_imports(root.host_path(real), shown)
    return seen


def _libc(closures: list[Closure]) -> str | None:
    """The real path of glibc's libc.so.6 in the closures, if any."""
    for c in closures:
        for lib in c.libraries:
            if (lib.elf.soname or lib.soname) == "libc.so.6":
                return lib.real
    return None


_VERSION = re.compile(rb"release version (\d+)\.(\d+)")


def _glibc_version(root: SysRoot, closures: list[Closure]) -> tuple[int, int] | None:
    """glibc's version, from the banner libc.so.6 prints when it is run."""
    libc = _libc(closures)
    data = root.read_bytes(libc) if libc else None
    match = _VERSION.search(data) if data else None
    return (int(match.group(1)), int(match.group(2))) if match else None
