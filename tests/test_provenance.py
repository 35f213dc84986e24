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
    assert doc["creationInfo"]["created"] == "1980-01-02T00:00:00Z"
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
    # scanners need the distribution too: the root's /etc/os-release (a link on Debian 12),
    # and the status of the package holding it
    assert Archive(out).file("usr/lib/os-release") == Path("/usr/lib/os-release").read_bytes()
    assert "etc/os-release" in members and "var/lib/dpkg/status.d/base-files" in members
    bare = tmp_path / "b.tar"
    assert slimmer("pack", "/usr/bin/jq", "-o", str(bare), "--without",
                   "dpkg-status").returncode == 0
    assert not any(n.startswith(("var/lib/dpkg", "etc/os-release", "usr/lib/os-release"))
                   for n in Archive(bare).members())


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
