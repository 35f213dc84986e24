"""Path resolution clamped inside a root."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimmer.errors import FileProblem, SymlinkLoop
from slimmer.loader.root import SysRoot
from slimmer.paths import normalize


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/lib").mkdir(parents=True)
    (r / "usr/lib/real.so").write_text("in the root")
    (r / "lib").symlink_to("usr/lib")
    (r / "usr/lib/abs.so").symlink_to("/usr/lib/real.so")
    (r / "usr/lib/escape").symlink_to("../../../../../../../etc")
    (r / "usr/lib/hostpasswd").symlink_to("/etc/passwd")
    (r / "usr/lib/loop1").symlink_to("loop2")
    (r / "usr/lib/loop2").symlink_to("loop1")
    (r / "etc").mkdir()
    (r / "etc/marker").write_text("root's etc")
    return r


def test_absolute_links_restart_at_the_root(root: Path) -> None:
    found = SysRoot(root).lookup("/lib/abs.so")
    assert found is not None and found.real == "/usr/lib/real.so"
    assert [(link.path, link.target) for link in found.links] == [
        ("/lib", "usr/lib"), ("/usr/lib/abs.so", "/usr/lib/real.so")]


def test_dotdot_never_leaves_the_root(root: Path) -> None:
    sysroot = SysRoot(root)
    found = sysroot.lookup("/usr/lib/escape/marker")
    assert found is not None and found.real == "/etc/marker"
    assert sysroot.read_bytes("/usr/lib/escape/marker") == b"root's etc"
    assert sysroot.lookup("/../../../etc/marker") is not None
    # /etc/passwd exists on the host, not in this root
    assert sysroot.lookup("/usr/lib/hostpasswd") is None
    assert sysroot.lookup("/usr/lib/escape/passwd") is None


def test_loops_are_refused(root: Path) -> None:
    with pytest.raises(SymlinkLoop, match="too many levels of symbolic links"):
        SysRoot(root).lookup("/usr/lib/loop1")


def test_require_file_errors(root: Path) -> None:
    sysroot = SysRoot(root)
    with pytest.raises(FileProblem, match="no such file"):
        sysroot.require_file("/nothing")
    with pytest.raises(FileProblem, match="is a directory"):
        sysroot.require_file("/usr/lib")
    assert sysroot.require_file("/lib/real.so").is_file


def test_a_file_used_as_a_directory_does_not_exist(root: Path) -> None:
    assert SysRoot(root).lookup("/usr/lib/real.so/x") is None


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileProblem, match="root is not a directory"):
        SysRoot(tmp_path / "absent")


def test_normalize() -> None:
    assert normalize("/a/./b/../../../c//d/") == "/c/d"
