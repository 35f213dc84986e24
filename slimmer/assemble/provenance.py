"""Where an image's files come from: the root's dpkg database, and what is made of it: dpkg
status entries in the image (as distroless has them, so scanners recognise the packages), an
SPDX 2.3 SBOM, and lock files that pin every input.

Everything here is deterministic: sorted, ids derived from content, created = the build epoch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from slimmer.errors import SlimmerError, printable
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.root import Root
from slimmer.outputs import write_file
from slimmer.probe.probe import Probed
from slimmer.tree import File, FileTree, file_digests

STATUS_DIR = "/var/lib/dpkg/status.d"


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    version: str
    architecture: str
    stanza: str  # its entry of /var/lib/dpkg/status, as written there
    license: str  # an SPDX expression, or NOASSERTION

    @property
    def purl(self) -> str:
        """pkg:deb/debian/NAME@VERSION?arch=ARCH, a Debian epoch as the `epoch` qualifier."""
        epoch, _, version = self.version.rpartition(":")
        extra = f"&epoch={epoch}" if epoch else ""
        return f"pkg:deb/debian/{self.name}@{version}?arch={self.architecture}{extra}"


class Dpkg:
    """The root's dpkg database (loader.dpkg's reader): which package owns each (real) path."""

    def __init__(self, root: Root, db: PackageDb | None = None) -> None:
        self.root = root
        self.db = PackageDb(root) if db is None else db
        self._packages: dict[str, Package] = {}  # made when asked: each reads its license

    def package(self, name: str) -> Package | None:
        """An installed package, with the license of its copyright file."""
        found = self._packages.get(name)
        if found is None:
            entry = self.db.entries.get(name)
            if entry is None:
                return None
            found = self._packages[name] = Package(name, entry.version, entry.architecture,
                                                   entry.stanza, _license(self.root, name))
        return found

    def package_of(self, path: str) -> Package | None:
        """The package of a real path (the first listing it: a directory has many)."""
        name = self.db.owner_of(path)
        return self.package(name) if name else None


# DEP-5 short names -> SPDX identifiers, for the common ones; anything else is NOASSERTION.
_SPDX = {
    "gpl-2+": "GPL-2.0-or-later", "gpl-2": "GPL-2.0-only", "gpl-3+": "GPL-3.0-or-later",
    "gpl-3": "GPL-3.0-only", "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-2+": "LGPL-2.0-or-later", "lgpl-3+": "LGPL-3.0-or-later", "mit": "MIT",
    "expat": "MIT", "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
    "apache-2.0": "Apache-2.0", "zlib": "Zlib", "isc": "ISC", "public-domain": "NOASSERTION",
    "mpl-2.0": "MPL-2.0", "openssl": "OpenSSL", "curl": "curl", "psf-2": "PSF-2.0",
}


def _license(root: Root, name: str) -> str:
    """The license of the `Files: *` paragraph of a machine-readable copyright file."""
    data = root.read_bytes(f"/usr/share/doc/{name}/copyright", 1 << 16)
    if data is None or not data.startswith(b"Format: http"):
        return "NOASSERTION"
    text = data.decode("utf-8", "replace")
    match = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(\S[^\n]*)$", text, re.M | re.S)
    if match is None:
        return "NOASSERTION"
    names = [n.strip().lower() for n in re.split(r"\s+or\s+", match.group(1), flags=re.I)]
    mapped = [_SPDX.get(n) for n in names]
    if any(m is None or m == "NOASSERTION" for m in mapped):
        return "NOASSERTION"
    return " OR ".join(m for m in mapped if m)


# ---- what the image holds -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Input:
    """One file of the image: where it is, its content, and the package it came from."""

    path: str
    sha256: str
    sha1: str
    size: int
    package: Package | None


def inputs(tree: FileTree, dpkg: Dpkg | None) -> list[Input]:
    out = []
    for path, entry in tree.items():
        if not isinstance(entry, File):
            continue
        sha256, sha1 = file_digests(entry)
        out.append(Input(path, sha256, sha1, entry.size,
                         dpkg.package_of(path) if dpkg is not None else None))
    return out


def add_dpkg_status(tree: FileTree, dpkg: Dpkg) -> None:
    """/var/lib/dpkg/status.d/NAME for each package the image took files from."""
    used = sorted({name for name in (dpkg.db.owner_of(path) for path, e in tree.items()
                                     if isinstance(e, File)) if name is not None})
    for name in used:
        stanza = dpkg.db.entries[name].stanza.encode()
        tree.add(f"{STATUS_DIR}/{name}", File(0o644, len(stanza), data=stanza),
                 f"dpkg status of {name}, for vulnerability scanners")


# ---- lock files -----------------------------------------------------------------------------

LOCK_HEADER = "# slimmer lock 1: path, sha256, size, Debian package and version\n"


PROBE_RECORD = "probe"  # a lock line `probe<TAB>PATH<TAB>REASON`: what --probe touched


def lock_text(items: list[Input], probed: tuple[Probed, ...] = ()) -> str:
    """Every input file, then what a probe touched (so that --locked builds the same image
    without running anything)."""
    lines = [LOCK_HEADER]
    for item in sorted(items, key=lambda i: i.path):
        owner = f"{item.package.name} {item.package.version}" if item.package else "-"
        lines.append(f"{item.path}\tsha256:{item.sha256}\t{item.size}\t{owner}\n")
    for found in probed:
        lines.append(f"{PROBE_RECORD}\t{found.path}\t{found.reason}\n")
    return "".join(lines)


def probed_in_lock(text: str, name: str) -> tuple[Probed, ...]:
    """The probe's records of a lock file."""
    out = []
    for line in text.splitlines()[1:]:
        if line.startswith(PROBE_RECORD + "\t"):
            fields = line.split("\t")
            if len(fields) != 3 or not fields[1].startswith("/"):
                raise SlimmerError(f"{name}: a bad probe record: {printable(line, 80)}")
            out.append(Probed(fields[1], fields[2]))
    return tuple(out)


def check_lock(text: str, items: list[Input], name: str) -> None:
    """Refuse when the inputs are no longer what the lock file says, naming each change."""
    if not text.startswith(LOCK_HEADER):
        raise SlimmerError(f"{name}: not a slimmer lock file")
    want = {line.split("\t", 1)[0]: line for line in text.splitlines()[1:]
            if line and not line.startswith(PROBE_RECORD + "\t")}
    have = {line.split("\t", 1)[0]: line for line in lock_text(items).splitlines()[1:] if line}
    changes = [f"added {p}" for p in sorted(set(have) - set(want))]
    changes += [f"removed {p}" for p in sorted(set(want) - set(have))]
    changes += [f"changed {p}" for p in sorted(set(want) & set(have)) if want[p] != have[p]]
    if changes:
        raise SlimmerError(f"{name}: the root no longer matches the lock: {'; '.join(changes)}")


# ---- SPDX 2.3 -------------------------------------------------------------------------------


def spdx(items: list[Input], image_name: str, created: str, tool: str) -> bytes:
    """An SPDX 2.3 JSON document: one package per Debian package that contributed files, every
    file with its checksums, CONTAINS relationships; ids and namespace from the content."""
    def ident(kind: str, text: str) -> str:
        return f"SPDXRef-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    packages = sorted({i.package.name: i.package for i in items if i.package}.values(),
                      key=lambda p: p.name)
    files = sorted(items, key=lambda i: i.path)
    content = "\n".join(f"{i.path} {i.sha256}" for i in files)
    namespace = ("https://slimmer.invalid/spdx/"
                 + hashlib.sha256(f"{image_name}\n{content}".encode()).hexdigest())
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"slimmer image {image_name}",
        "documentNamespace": namespace,
        "creationInfo": {"created": created, "creators": [f"Tool: {tool}"]},
        "packages": [{
            "SPDXID": ident("Package", f"{p.name}@{p.version}"),
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": True,
            "packageVerificationCode": {"packageVerificationCodeValue": _verification_code(
                [i.sha1 for i in files if i.package and i.package.name == p.name])},
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": p.license,
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER",
                              "referenceType": "purl", "referenceLocator": p.purl}],
        } for p in packages],
        "files": [{
            "SPDXID": ident("File", i.path),
            "fileName": "." + i.path,
            "checksums": [{"algorithm": "SHA1", "checksumValue": i.sha1},
                          {"algorithm": "SHA256", "checksumValue": i.sha256}],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            **({} if i.package else {"comment": "belongs to no Debian package"}),
        } for i in files],
        "relationships": [
            *({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
               "relatedSpdxElement": ident("Package", f"{p.name}@{p.version}")}
              for p in packages),
            *({"spdxElementId": ident("Package", f"{i.package.name}@{i.package.version}"),
               "relationshipType": "CONTAINS", "relatedSpdxElement": ident("File", i.path)}
              for i in files if i.package),
            *({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
               "relatedSpdxElement": ident("File", i.path)} for i in files if not i.package),
        ],
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _verification_code(sha1s: list[str]) -> str:
    """SPDX's package verification code: the SHA1 of the sorted SHA1s of its files."""
    return hashlib.sha1("".join(sorted(sha1s)).encode()).hexdigest()


def write_atomically(path: str, data: bytes) -> None:
    """Write `path` as every output is written (outputs.writing: never through a planted
    temporary name, in place only when complete, a device or FIFO as a stream)."""
    write_file(path, data)
