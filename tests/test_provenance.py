"""Provenance: dpkg status entries in the image, SPDX SBOMs checked by a real validator, lock
files, and the same digest from a root copied elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import pack
from slimmer.errors import SlimmerError
from tests.support.archives import Archive
from tests.support.cli import run as slimmer
from tests.support.compile import Compile
from tests.support.host import need_tool
from tests.support.roots import small_root


def test_sbom_is_valid_spdx_with_packages_and_files(tmp_path: Path) -> None:
    sbom = tmp_path / "jq.spdx.json"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(tmp_path / "jq.tar"), "--sbom", str(sbom))
    assert done.returncode == 0, done.stderr
    beside = Path(sys.executable).parent / "pyspdxtools"  # the dev extra installs it here
    validator = str(beside) if beside.exists() else need_tool("pyspdxtools")
    check = subprocess.run([validator, "-i", str(sbom)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    doc = json.loads(sbom.read_text())
    packages = {p["name"]: p for p in doc["packages"]}
    assert packages["jq"]["externalRefs"][0]["referenceLocator"].startswith(
        "pkg:deb/debian/jq@")
    assert packages["jq"]["licenseDeclared"] == "MIT"  # from its machine-readable copyright
    files = {f["fileName"]: f for f in doc["files"]}
    assert {c["algorithm"] for c in files["./usr/bin/jq"]["checksums"]} == {"SHA1", "SHA256"}
    assert files["./etc/passwd"]["comment"] == "belongs to no Debian package"
    assert doc["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    again = tmp_path / "again.json"
    slimmer("pack", "/usr/bin/jq", "-o", str(tmp_path / "jq2.tar"), "--sbom", str(again))
    assert again.read_bytes() == sbom.read_bytes()  # namespace and ids come from the content


def test_dpkg_status_entries_in_the_image(tmp_path: Path) -> None:
    out = tmp_path / "j.tar"
    assert slimmer("pack", "/usr/bin/jq", "-o", str(out)).returncode == 0
    members = Archive(out).members()
    assert "var/lib/dpkg/status.d/jq" in members and "var/lib/dpkg/status.d/libc6" in members
    status = Archive(out).file("var/lib/dpkg/status.d/jq").decode()
    assert status.startswith("Package: jq\n") and "\nVersion: " in status
    bare = tmp_path / "b.tar"
    assert slimmer("pack", "/usr/bin/jq", "-o", str(bare), "--without",
                   "dpkg-status").returncode == 0
    assert not any(n.startswith("var/lib/dpkg") for n in Archive(bare).members())


def test_lock_round_trip(tmp_path: Path, cc: Compile) -> None:
    root = small_root(tmp_path, cc)
    lock = tmp_path / "image.lock"
    opts = from_keywords(programs=("/usr/bin/zprog",), output=str(tmp_path / "a.tar"),
                          root=str(root), lock=str(lock))
    pack(*opts)
    text = lock.read_text()
    assert text.splitlines()[0].startswith("# slimmer lock 1")
    assert any(line.startswith("/usr/lib/x86_64-linux-gnu/libz.so.1\tsha256:")
               for line in text.splitlines())
    # the same root: accepted
    pack(*from_keywords(programs=("/usr/bin/zprog",), output=str(tmp_path / "b.tar"),
                        root=str(root), locked=str(lock)))
    # a copy of the root with one library changed: refused, naming it
    changed = tmp_path / "changed"
    shutil.copytree(root, changed, symlinks=True)
    libz = changed / "usr/lib/x86_64-linux-gnu/libz.so.1"
    libz.write_bytes(libz.read_bytes() + b"\0")
    with pytest.raises(SlimmerError, match=r"no longer matches the lock: changed "
                                           r"/usr/lib/x86_64-linux-gnu/libz.so.1$"):
        pack(*from_keywords(programs=("/usr/bin/zprog",), output=str(tmp_path / "c.tar"),
                            root=str(changed), locked=str(lock)))
    assert not (tmp_path / "c.tar").exists()


def test_a_root_copied_elsewhere_gives_the_same_image(tmp_path: Path, cc: Compile) -> None:
    root = small_root(tmp_path, cc)
    copy = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(root, copy, symlinks=True)
    for path in copy.rglob("*"):
        os.utime(path, (1000, 2000), follow_symlinks=False)
    digests: list[tuple[str, bytes]] = []
    for r in (root, copy):
        out = tmp_path / f"{len(digests)}.tar"
        result = pack(*from_keywords(programs=("/usr/bin/zprog",), output=str(out), root=str(r),
                                     tag="z:1"))
        digests.append((result.image.manifest_digest, out.read_bytes()))
    assert digests[0] == digests[1]


@pytest.mark.parametrize("kind", ["fifo", "directory", "binary"])
def test_locked_that_is_no_lock_file_is_refused_at_once(tmp_path: Path, cc: Compile,
                                                        kind: str) -> None:
    """A FIFO given as --locked used to block forever; a directory or binary junk gave a
    traceback. Each is one error naming the file."""
    root = small_root(tmp_path, cc)
    lock = tmp_path / "image.lock"
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "directory":
        lock.mkdir()
    else:
        lock.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(SlimmerError, match=rf"^{lock}: ") as caught:
        pack(*from_keywords(programs=("/usr/bin/zprog",), output=str(tmp_path / "o.tar"),
                            root=str(root), locked=str(lock)))
    assert "\n" not in caught.value.message
    assert not (tmp_path / "o.tar").exists()


@pytest.mark.parametrize("program", ["/usr/bin/jq", "/usr/bin/python3"])
def test_dpkg_index_of_wanted_names_gives_the_same_owners(program: str) -> None:
    """Dpkg(root, wanted) indexes only listed paths with the image's file names: every file of
    the image gets the package the full index gives."""
    from slimmer.assemble.assembly import assemble
    from slimmer.assemble.provenance import Dpkg
    from slimmer.loader.root import SysRoot
    from slimmer.tree import File

    image, build, _ = from_keywords(programs=(program,), output="/dev/null")
    files = [p for p, e in assemble(image, build).tree.items() if isinstance(e, File)]
    full = Dpkg(SysRoot("/"))
    part = Dpkg(SysRoot("/"), frozenset(p.rpartition("/")[2] for p in files))
    owners = [(p, full.package_of(p)) for p in files]
    assert owners == [(p, part.package_of(p)) for p in files]
    assert sum(1 for _, owner in owners if owner is not None) >= 5  # jq: 8 of its 18
    assert len(part.owner) < len(full.owner) // 10
    # the packages kept: those owning an indexed path, every owner of the image's files among
    # them, each as the full database has it (license included)
    assert {o.name for _, o in owners if o is not None} <= set(part.packages)
    assert len(part.packages) < len(full.packages)
    assert all(full.packages[name] == package for name, package in part.packages.items())
