"""Runtime rules (runtime.py) on their own: what they add, and the options that steer them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slimmer.errors import SlimmerError
from slimmer.packer import PackOptions, pack
from slimmer.runtime import check_features, enabled
from tests.conftest import Compile, main_source


def old_glibc_root(tmp_path: Path, cc: Compile) -> Path:
    """A root whose libc says it is glibc 2.31 (the banner patched in a copy), with NSS
    modules beside it."""
    root = tmp_path / "old"
    gnu = root / "usr/lib/x86_64-linux-gnu"
    gnu.mkdir(parents=True)
    data = Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")).read_bytes()
    assert b"release version 2.36" in data
    (gnu / "libc.so.6").write_bytes(data.replace(b"release version 2.36",
                                                 b"release version 2.31"))
    for name in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):
        shutil.copy(os.path.realpath(f"/lib/x86_64-linux-gnu/{name}"), gnu / name)
    shutil.copy(os.path.realpath("/lib64/ld-linux-x86-64.so.2"), gnu / "ld-linux-x86-64.so.2")
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    cc(root / "usr/bin/prog", main_source())
    return root


def test_old_glibc_gets_its_nss_modules(tmp_path: Path, cc: Compile) -> None:
    root = old_glibc_root(tmp_path, cc)
    result = pack(PackOptions(programs=("/usr/bin/prog",), output=str(tmp_path / "o.tar"),
                              root=str(root)))
    tree = result.tree
    for name in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):
        path = f"/usr/lib/x86_64-linux-gnu/{name}"
        assert path in tree, name
        assert "glibc 2.31 loads it" in tree.reasons[path]
    without = pack(PackOptions(programs=("/usr/bin/prog",), output=str(tmp_path / "n.tar"),
                               root=str(root), without_features=frozenset({"nss"})))
    assert "/usr/lib/x86_64-linux-gnu/libnss_files.so.2" not in without.tree


def test_a_current_glibc_needs_no_nss_module(tmp_path: Path) -> None:
    result = pack(PackOptions(programs=("/usr/bin/jq",), output=str(tmp_path / "j.tar")))
    assert not any("libnss" in p for p, _ in result.tree.items())


def test_reasons_say_why(tmp_path: Path, cc: Compile) -> None:
    prog = cc("cancel", "#include <pthread.h>\nint main(void) { "
              "return pthread_cancel(pthread_self()); }\n", "-pthread")
    result = pack(PackOptions(programs=(str(prog),), output=str(tmp_path / "c.tar")))
    reason = result.tree.reasons["/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"]
    assert reason == "glibc dlopens it for pthread_cancel/pthread_exit, used by /app/cancel"
    assert "ld.so.cache" in result.tree.reasons["/etc/ld.so.cache"]


def test_feature_names_are_checked() -> None:
    assert check_features(["tzdata"], "--with") == {"tzdata"}
    with pytest.raises(SlimmerError, match="--with tzdat: unknown feature"):
        check_features(["tzdat"], "--with")
    with pytest.raises(SlimmerError, match="--with and --without both name certs"):
        enabled(frozenset({"certs"}), frozenset({"certs"}))
    assert "shell" not in enabled(frozenset(), frozenset())
    assert "gconv" not in enabled(frozenset(), frozenset({"gconv"}))


def test_cli_rejects_an_unknown_feature(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "slimmer", "pack", "/usr/bin/jq", "-o",
                           str(tmp_path / "x.tar"), "--without", "nothing"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("error: --without nothing: unknown feature")
